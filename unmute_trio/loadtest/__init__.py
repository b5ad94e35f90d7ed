"""The load generator: ``unmute-trio loadtest`` (docs/benchmarks.md, extended).

Simulated users hold real voice conversations with a server over ``/v1/realtime``: Ogg/Opus
speech-like audio paced at real time (:mod:`.microphone`), turn by turn (:mod:`.conversation`),
many at once (:mod:`.runner`). Each reply is timed with the original's definitions plus
voice-to-voice latency and output audio timing (:mod:`.timing`, :mod:`.report`); against the
simulators, the latency they add by design is computed exactly (:mod:`.floor`) so what the
backend adds can be reported on its own. :mod:`.table` prints the summary, :mod:`.procfs`
reads process figures for ``bench/capacity.py``.
"""
