"""The fast path for Audio messages (protocol/moshi.py: from the TTS, and to the STT) gives
exactly what the general msgpack + pydantic path gives, and leaves every other layout to it."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from unmute_trio.protocol import moshi
from unmute_trio.protocol.errors import WireFormatError


def general(data: bytes) -> object:
    return moshi._decode(data, "TTS server message", moshi._TTS_SERVER)


def assert_same_audio(fast: object, slow: object) -> None:
    assert isinstance(fast, moshi.Audio) and isinstance(slow, moshi.Audio)
    assert fast.pcm.dtype == slow.pcm.dtype == np.float32
    assert fast.pcm.shape == slow.pcm.shape
    assert fast.pcm.tobytes() == slow.pcm.tobytes()  # bit for bit, NaN and -0.0 included


def awkward_pcm(n: int) -> np.ndarray:
    """``n`` random samples, the first four NaN, -0.0, inf and the smallest normal float32."""
    pcm = np.random.default_rng(n).uniform(-1, 1, n).astype(np.float32)
    if n >= 4:
        pcm[:4] = [np.nan, -0.0, np.inf, np.finfo(np.float32).tiny]
    return pcm


@pytest.mark.parametrize("n", [0, 1, 15, 16, 1920, 65535, 65536])
def test_fast_audio_decode_equals_the_general_path(n: int) -> None:
    pcm = awkward_pcm(n)
    data = moshi.encode(moshi.Audio(pcm=pcm))
    assert moshi._decode_audio_fast(data) is not None  # the fast path took it
    fast = moshi.decode_tts_server(data)
    assert_same_audio(fast, general(data))
    assert fast.pcm.tobytes() == pcm.tobytes()
    # The same frame as the STT reads it (the simulator and the local STT engine).
    to_stt = moshi.decode_stt_client(data)
    assert_same_audio(to_stt, moshi._decode(data, "STT client message", moshi._STT_CLIENT))


def test_audio_as_a_real_moshi_server_writes_it_is_read_by_the_fast_path() -> None:
    # rmp_serde: fixmap of 2, "type" first, an array16 of float32 items.
    pcm = np.array([0.5, -0.25], dtype=np.float32)
    data = b"\x82\xa4type\xa5Audio\xa3pcm\x92\xca\x3f\x00\x00\x00\xca\xbe\x80\x00\x00"
    assert moshi.encode(moshi.Audio(pcm=pcm)) == data
    audio = moshi._decode_audio_fast(data)
    assert audio is not None and audio.pcm.tolist() == [0.5, -0.25]


@pytest.mark.parametrize(
    "data",
    [
        # float 64 items: valid msgpack, read by the general path
        msgpack.packb({"type": "Audio", "pcm": [0.5, -0.25]}),
        # another key order
        msgpack.packb({"pcm": [0.5, -0.25], "type": "Audio"}),
        # integers in the array
        msgpack.packb({"type": "Audio", "pcm": [0, 1]}),
        # a float 32 array followed by a float 64 item
        b"\x82\xa4type\xa5Audio\xa3pcm\x92\xca\x3f\x00\x00\x00\xcb"
        + np.float64(-0.25).byteswap().tobytes(),
    ],
)
def test_other_valid_layouts_take_the_general_path(data: bytes) -> None:
    assert moshi._decode_audio_fast(data) is None
    audio = moshi.decode_tts_server(data)
    assert isinstance(audio, moshi.Audio)
    assert audio.pcm.dtype == np.float32 and audio.pcm.tolist()[0] in (0.5, 0.0)


@pytest.mark.parametrize(
    "data",
    [
        b"\x82\xa4type\xa5Audio\xa3pcm",  # no array
        b"\x82\xa4type\xa5Audio\xa3pcm\x92\xca\x3f\x00\x00\x00",  # one item short
        b"\x82\xa4type\xa5Audio\xa3pcm\x91\xca\x3f\x00\x00\x00\x00",  # a byte too many
        b"\x82\xa4type\xa5Audio\xa3pcm\xdc\x00",  # a cut array header
    ],
)
def test_broken_audio_is_still_a_wire_format_error(data: bytes) -> None:
    assert moshi._decode_audio_fast(data) is None
    with pytest.raises(WireFormatError):
        moshi.decode_tts_server(data)


def test_other_tts_messages_are_unchanged() -> None:
    text = moshi.encode(moshi.TextOut(text="hi", start_s=0.5, stop_s=0.75))
    assert moshi.decode_tts_server(text) == moshi.TextOut(text="hi", start_s=0.5, stop_s=0.75)
    assert moshi.decode_tts_server(moshi.encode(moshi.Ready())) == moshi.Ready()


@pytest.mark.parametrize("n", [0, 1, 15, 16, 1920, 3840, 65535, 65536])
def test_audio_to_the_stt_is_encoded_as_the_general_path_encodes_it(n: int) -> None:
    pcm = awkward_pcm(n)
    expected = moshi.encode(moshi.Audio(pcm=pcm))
    assert moshi.encode_audio(pcm) == expected
    # Other dtypes and strided views are converted as the model converts them.
    assert moshi.encode_audio(pcm.astype(np.float64)) == expected
    doubled = np.repeat(pcm, 2)
    assert moshi.encode_audio(doubled[::2]) == expected
    assert moshi.decode_stt_client(moshi.encode_audio(pcm)).pcm.tobytes() == pcm.tobytes()


def test_audio_to_the_stt_must_be_mono() -> None:
    with pytest.raises(ValueError, match="1-D"):
        moshi.encode_audio(np.zeros((2, 1920), dtype=np.float32))
