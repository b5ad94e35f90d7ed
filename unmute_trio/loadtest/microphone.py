"""Pre-encoded microphone audio, so hundreds of simulated users cost the load generator little.

Encoding Opus in real time for every simulated user would make the generator, not the server,
the bottleneck: a fresh encoder fed silence costs ~0.3 ms per 40 ms page on this project's
machine. So the audio is encoded once per run (:func:`encode_microphone`) by one sphn encoder,
in 40 ms Ogg pages as the browser sends them, and each user's stream (:class:`OggStream`)
re-numbers those pages: sequence numbers and granule positions continue from page to page and
the CRC is recomputed, so the server receives one valid Ogg/Opus stream per session, made of
silence pages and the pages of the utterances in the order the conversation needs.

An Opus packet carries its own audio; a decoder fed packets from different points of one
encoder run decodes each correctly (its state only smooths the joins), which is what lets
utterances start whenever the conversation asks.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Sequence

import numpy as np
import sphn

from unmute_trio.protocol.moshi import SAMPLE_RATE
from unmute_trio.protocol.ogg_opus import ogg_crc, split_pages
from unmute_trio.testing.speech import silence

PAGE_SAMPLES = 960  # 40 ms per page, one Opus packet, as the Unmute frontend sends
PAGE_S = PAGE_SAMPLES / SAMPLE_RATE
GRANULE_PER_PAGE = PAGE_SAMPLES * 48_000 // SAMPLE_RATE  # Ogg Opus granules count 48 kHz
SILENCE_POOL_PAGES = 25  # one second of silence pages, cycled
_SETTLE_S = 1.0  # silence encoded before the pool and after each utterance (then discarded)

# Ogg page header (RFC 3533): capture "OggS", version, header type, granule position (8 bytes,
# offset 6), serial (14), page sequence number (18), CRC (22), segment count (26).
_GRANULE = struct.Struct("<q")
_SEQUENCE = struct.Struct("<I")
_GRANULE_AT, _SEQUENCE_AT, _CRC_AT, _SEGMENTS_AT = 6, 18, 22, 26
_NO_CRC = bytes(4)


@dataclasses.dataclass(frozen=True)
class EncodedMicrophone:
    headers: bytes  # the OpusHead and OpusTags pages
    silence: tuple[bytes, ...]  # SILENCE_POOL_PAGES pages of silence
    utterances: tuple[tuple[bytes, ...], ...]  # the pages of each utterance


def encode_microphone(utterances: Sequence[np.ndarray]) -> EncodedMicrophone:
    """Encode silence and each utterance (whole 960-sample pages) with one encoder."""
    writer = sphn.OpusStreamWriter(SAMPLE_RATE)

    def pages_of(pcm: np.ndarray) -> list[bytes]:
        if len(pcm) % PAGE_SAMPLES:
            raise ValueError("audio must be whole 960-sample pages")
        out = []
        for i in range(0, len(pcm), PAGE_SAMPLES):
            out += split_pages(writer.append_pcm(pcm[i : i + PAGE_SAMPLES]))
        return out

    settle = silence(_SETTLE_S)
    headers = pages_of(settle)[:2]  # sphn's first output: OpusHead, OpusTags, then audio
    pool = pages_of(silence(SILENCE_POOL_PAGES * PAGE_S))
    encoded = []
    for pcm in utterances:
        encoded.append(tuple(pages_of(pcm.astype(np.float32))))
        pages_of(settle)  # back to silence before the next one, as in a conversation
    return EncodedMicrophone(b"".join(headers), tuple(pool), tuple(encoded))


class OggStream:
    """One client's Ogg stream built from pre-encoded pages (see the module docstring)."""

    def __init__(self, microphone: EncodedMicrophone) -> None:
        self._microphone = microphone
        self._sequence = 2  # after the two header pages
        self._granule = 0
        self._silence_index = 0
        self.started = False

    def next_page(self, source: bytes | None) -> bytes:
        """``source`` (a page of an utterance) or, if None, the next silence page, renumbered;
        the first call also returns the header pages before it."""
        if source is None:
            pool = self._microphone.silence
            source = pool[self._silence_index % len(pool)]
            self._silence_index += 1
        page = bytearray(source)
        self._granule += GRANULE_PER_PAGE
        _GRANULE.pack_into(page, _GRANULE_AT, self._granule)
        _SEQUENCE.pack_into(page, _SEQUENCE_AT, self._sequence)
        self._sequence += 1
        page[_CRC_AT : _CRC_AT + 4] = _NO_CRC
        _SEQUENCE.pack_into(page, _CRC_AT, ogg_crc(page))
        if self.started:
            return bytes(page)
        self.started = True
        return self._microphone.headers + bytes(page)
