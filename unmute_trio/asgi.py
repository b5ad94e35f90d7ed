"""ASGI entry point for running hypercorn directly:

    hypercorn --config hypercorn.toml unmute_trio.asgi:app

Settings come from the environment, as with ``unmute-trio serve``; a configuration error stops
the worker at import with a message naming the variable. Logging is configured here the same way
``serve`` configures it (``UNMUTE_LOG_LEVEL``, standard error; ``web.app.configure_logging``).

With several workers and ``PROMETHEUS_MULTIPROC_DIR`` set, the directory is created here if
missing but not emptied: a worker cannot tell a previous run's files from its siblings'. Empty
it before starting hypercorn (or use ``unmute-trio serve``, which does); see
docs/deployment.md.
"""

from unmute_trio.web.drain import prepare_metrics_dir

# Before unmute_trio.metrics creates this worker's metric files in the directory.
prepare_metrics_dir(wipe=False)

from unmute_trio.settings import Settings  # noqa: E402
from unmute_trio.web.app import configure_logging, create_app  # noqa: E402

_settings = Settings.from_env()
configure_logging(_settings.log_level)
app = create_app(_settings)
