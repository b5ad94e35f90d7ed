"""unmute-trio: real-time voice conversations with an LLM, on trio."""

__version__ = "0.1.0"
