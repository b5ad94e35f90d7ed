"""ASGI entry point for running hypercorn directly:

    hypercorn --config hypercorn.toml unmute_trio.asgi:app

Settings come from the environment, as with ``unmute-trio serve``; a configuration error stops
the worker at import with a message naming the variable.
"""

from unmute_trio.settings import Settings
from unmute_trio.web.app import create_app

app = create_app(Settings.from_env())
