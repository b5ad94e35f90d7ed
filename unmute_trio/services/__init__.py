"""Trio shells that do I/O with the services: STT, TTS (moshi-server WebSockets), the LLM,
voice cloning, health probes, and service discovery.

Library exceptions are translated at this boundary into :mod:`unmute_trio.errors`
(``ServiceAtCapacity``, ``ServiceTimeout``, ``ServiceDisconnected``, ``ServiceProtocolError``),
each naming its service. Import the modules directly (``unmute_trio.services.stt`` ...).
"""
