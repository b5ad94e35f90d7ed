"""Pure wire models and codecs: browser JSON events, moshi-server msgpack messages, instructions.

Nothing here does I/O. Decoding failures raise :class:`WireFormatError` with validation details.
"""

from unmute_trio.protocol.errors import WireFormatError

__all__ = ["WireFormatError"]
