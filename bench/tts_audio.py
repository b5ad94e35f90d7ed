"""Server CPU per TTS audio message, PCM against Opus (issue 14, docs/benchmarks.md).

For each 80 ms of bot audio, the Unmute dialect turns one TTS message into the Ogg bytes of a
``response.audio.delta``:
- ``pcm`` (``UNMUTE_TTS_AUDIO=pcm``): a 9.6 KB ``Audio`` message read into numpy, then encoded
  by the session's Opus encoder;
- ``opus`` (the default): a ~350-byte ``OggOpus`` message whose packets are read and re-framed
  into the session's Ogg stream, with no codec.

20 s of speech-like audio, one pass per round, CPU time (``time.process_time``) per message.
Prints the best of ``--rounds`` rounds for each path.

    .venv/bin/python bench/tts_audio.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import sphn

from unmute_trio.protocol.moshi import Audio, OggOpus, decode_tts_server, encode
from unmute_trio.protocol.ogg_opus import OpusAudioReader, OpusPackets
from unmute_trio.session.audio import OpusOutput
from unmute_trio.testing.speech import speech_like

FRAME = 1920  # samples per TTS message (80 ms at 24 kHz)


def messages(seconds: float) -> tuple[list[bytes], list[bytes]]:
    pcm = speech_like(seconds, seed=1).astype(np.float32)
    frames = [pcm[i : i + FRAME] for i in range(0, len(pcm) - FRAME + 1, FRAME)]
    writer = sphn.OpusStreamWriter(24_000)
    opus = [encode(OggOpus(data=writer.append_pcm(f))) for f in frames]
    return [encode(Audio(pcm=f)) for f in frames], opus


def pcm_path(wire: list[bytes]) -> float:
    out = OpusOutput()
    started = time.process_time()
    for data in wire:
        message = decode_tts_server(data)
        assert isinstance(message, Audio)
        out.encode_base64(message.pcm)
    return (time.process_time() - started) / len(wire)


def opus_path(wire: list[bytes]) -> float:
    out, reader = OpusOutput(), OpusAudioReader()
    started = time.process_time()
    for data in wire:
        message = decode_tts_server(data)
        assert isinstance(message, OggOpus)
        packets = reader.feed(message.data)
        if packets:
            out.encode_base64(OpusPackets.of(packets))
    return (time.process_time() - started) / len(wire)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    pcm_wire, opus_wire = messages(20.0)
    pcm = min(pcm_path(pcm_wire) for _ in range(args.rounds))
    opus = min(opus_path(opus_wire) for _ in range(args.rounds))
    sizes = f"Audio {len(pcm_wire[0])}, OggOpus ~{len(opus_wire[5])}"
    print(f"messages: {len(pcm_wire)} of 80 ms; bytes: {sizes}")
    print(f"pcm:  {pcm * 1e6:7.1f} µs per message (read, Opus encode, Ogg pages, base64)")
    print(f"opus: {opus * 1e6:7.1f} µs per message (read, packets re-framed, base64)")


if __name__ == "__main__":
    main()
