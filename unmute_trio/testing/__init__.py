"""Shipped test support, like ``trio.testing``: protocol-exact simulators of the STT, TTS, LLM
and voice-cloning services (real servers on loopback sockets) and helpers to run apps on
real hypercorn sockets."""
