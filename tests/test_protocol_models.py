"""Wire models round-trip the exact JSON / msgpack shapes of the contract."""

from __future__ import annotations

import json

import msgpack
import numpy as np
import pytest
from pydantic import ValidationError

from unmute_trio.protocol import browser, moshi
from unmute_trio.protocol.errors import WireFormatError
from unmute_trio.protocol.instructions import INSTRUCTIONS_ADAPTER

FRONTEND_SESSION_UPDATE = {
    "type": "session.update",
    "session": {
        "instructions": {"type": "smalltalk", "language": None},
        "voice": "unmute-prod-website/p329_022.wav",
        "allow_recording": True,
    },
}


def test_frontend_session_update_parses_and_gets_an_event_id() -> None:
    event = browser.parse_client_event(json.dumps(FRONTEND_SESSION_UPDATE))
    assert isinstance(event, browser.SessionUpdate)
    assert event.event_id.startswith("event_") and len(event.event_id) == len("event_") + 21
    dumped = json.loads(browser.encode_event(event))
    assert {k: v for k, v in dumped.items() if k != "event_id"} == FRONTEND_SESSION_UPDATE


def test_custom_constant_instructions_from_the_frontend() -> None:
    raw = {
        "type": "session.update",
        "event_id": "event_abc",
        "session": {
            "instructions": {"type": "constant", "text": "Be a pirate.", "language": "en/fr"},
            "voice": "custom:0b7e0c1c-2f8e-4d55-9a53-000000000000",
            "allow_recording": False,
        },
    }
    event = browser.parse_client_event(json.dumps(raw))
    assert event.event_id == "event_abc"
    assert json.loads(browser.encode_event(event)) == raw


@pytest.mark.parametrize(
    "instructions",
    [
        {"type": "constant", "text": "x", "language": None},
        {"type": "smalltalk", "language": "fr"},
        {"type": "guess_animal", "language": "en"},
        {"type": "quiz_show", "language": None},
        {"type": "news", "language": "fr/en"},
        {"type": "unmute_explanation"},
    ],
)
def test_all_six_instruction_kinds_round_trip(instructions: dict) -> None:
    model = INSTRUCTIONS_ADAPTER.validate_python(instructions)
    assert INSTRUCTIONS_ADAPTER.dump_python(model) == instructions


def test_instructions_ignore_unknown_fields_and_reject_unknown_kinds() -> None:
    m = INSTRUCTIONS_ADAPTER.validate_python({"type": "smalltalk", "mood": "cheerful"})
    assert INSTRUCTIONS_ADAPTER.dump_python(m) == {"type": "smalltalk", "language": None}
    with pytest.raises(Exception):  # noqa: B017 - pydantic's ValidationError
        INSTRUCTIONS_ADAPTER.validate_python({"type": "karaoke"})


def test_audio_append_and_anonymized_append() -> None:
    a = browser.parse_client_event('{"type": "input_audio_buffer.append", "audio": "T2dnUw=="}')
    assert isinstance(a, browser.InputAudioBufferAppend) and a.audio == "T2dnUw=="
    n = browser.parse_client_event(
        '{"type": "unmute.input_audio_buffer.append_anonymized", "number_of_samples": 960}'
    )
    assert isinstance(n, browser.UnmuteInputAudioBufferAppendAnonymized)


def test_invalid_client_events_carry_details() -> None:
    with pytest.raises(WireFormatError) as e:
        browser.parse_client_event('{"type": "nope"}')
    assert e.value.details[0]["type"] == "union_tag_invalid"
    with pytest.raises(WireFormatError, match="Invalid JSON"):
        browser.parse_client_event("{")
    with pytest.raises(WireFormatError):
        browser.parse_client_event(b"\xff\xfe")


SERVER_EVENTS = [
    {
        "type": "error",
        "error": {"type": "fatal", "code": None, "message": "m", "param": None, "details": None},
    },
    {"type": "session.updated", "session": FRONTEND_SESSION_UPDATE["session"]},
    {
        "type": "response.created",
        "response": {
            "object": "realtime.response",
            "status": "in_progress",
            "voice": "v",
            "chat_history": [{"role": "user", "content": "hi"}],
        },
    },
    {"type": "unmute.response.text.delta.ready", "delta": " word"},
    {"type": "response.text.delta", "delta": "word"},
    {"type": "response.text.done", "text": "all of it"},
    {"type": "response.audio.delta", "delta": "T2dnUw=="},
    {"type": "response.audio.done"},
    {
        "type": "conversation.item.input_audio_transcription.delta",
        "delta": "hi",
        "start_time": 1.25,
    },
    {"type": "input_audio_buffer.speech_started"},
    {"type": "input_audio_buffer.speech_stopped"},
    {"type": "unmute.interrupted_by_vad"},
    {
        "type": "unmute.additional_outputs",
        "args": {"chat_history": [], "debug_dict": {}, "debug_plot_data": []},
    },
    {"type": "unmute.response.audio.delta.ready", "number_of_samples": 1920},
]


@pytest.mark.parametrize("raw", SERVER_EVENTS, ids=lambda r: r["type"])
def test_server_events_round_trip(raw: dict) -> None:
    raw = {**raw, "event_id": "event_" + "a" * 21}
    event = browser.parse_server_event(json.dumps(raw))
    assert json.loads(browser.encode_event(event)) == raw


def test_make_error_shape() -> None:
    e = json.loads(browser.encode_event(browser.make_error("warning", "slow", details={"a": 1})))
    assert e["type"] == "error"
    assert e["error"] == {
        "type": "warning",
        "code": None,
        "message": "slow",
        "param": None,
        "details": {"a": 1},
    }


# ------------------------------------------------------------------ moshi msgpack


def rmp(obj: dict, single_float: bool = False) -> bytes:
    """What moshi-server's rmp_serde writes: a map in field order."""
    return msgpack.packb(obj, use_single_float=single_float)


@pytest.mark.parametrize(
    ("msg", "expected"),
    [
        (moshi.Ready(), rmp({"type": "Ready"})),
        (
            moshi.Error(message="no free channels"),
            rmp({"type": "Error", "message": "no free channels"}),
        ),
        (
            moshi.Word(text="hi", start_time=1.5),
            rmp({"type": "Word", "text": "hi", "start_time": 1.5}),
        ),
        (moshi.EndWord(stop_time=2.0), rmp({"type": "EndWord", "stop_time": 2.0})),
        (moshi.Marker(id=7), rmp({"type": "Marker", "id": 7})),
        (moshi.TextIn(text="Hello"), rmp({"type": "Text", "text": "Hello"})),
        (moshi.Eos(), rmp({"type": "Eos"})),
        (
            moshi.TextOut(text="a", start_s=0.08, stop_s=0.4),
            rmp({"type": "Text", "text": "a", "start_s": 0.08, "stop_s": 0.4}),
        ),
        (
            moshi.Step(step_idx=3, prs=[0.5, 0.25, 0.125, 1.0], buffered_pcm=960),
            b"".join(
                [
                    b"\x84",
                    msgpack.packb("type"),
                    msgpack.packb("Step"),
                    msgpack.packb("step_idx"),
                    msgpack.packb(3),
                    msgpack.packb("prs"),
                    msgpack.packb([0.5, 0.25, 0.125, 1.0], use_single_float=True),
                    msgpack.packb("buffered_pcm"),
                    msgpack.packb(960),
                ]
            ),
        ),
    ],
)
def test_moshi_messages_encode_byte_exact(msg, expected: bytes) -> None:
    assert moshi.encode(msg) == expected


def test_audio_and_voice_pack_float32_arrays() -> None:
    pcm = np.linspace(-1, 1, 1920, dtype=np.float32)
    assert moshi.encode(moshi.Audio(pcm=pcm)) == rmp(
        {"type": "Audio", "pcm": pcm.tolist()}, single_float=True
    )
    emb = np.arange(10, dtype=np.float32)
    voice = moshi.encode(moshi.Voice(embeddings=emb, shape=[1, 2, 5]))
    assert voice == rmp({"type": "Voice", "embeddings": emb.tolist(), "shape": [1, 2, 5]}, True)
    decoded = moshi.decode_tts_client(voice)
    assert isinstance(decoded, moshi.Voice) and decoded.shape == [1, 2, 5]
    np.testing.assert_array_equal(decoded.embeddings, emb)


def test_small_and_empty_arrays() -> None:
    for n in (0, 1, 15, 16, 65535, 65536):
        pcm = np.ones(n, dtype=np.float32)
        packed = moshi.encode(moshi.Audio(pcm=pcm))
        assert packed == rmp({"type": "Audio", "pcm": pcm.tolist()}, single_float=True)
        assert len(moshi.decode_stt_client(packed).pcm) == n


def test_decoders_reject_garbage_with_typed_errors() -> None:
    with pytest.raises(WireFormatError, match="not msgpack"):
        moshi.decode_stt_server(b"\xc1")
    with pytest.raises(WireFormatError, match="expected a map"):
        moshi.decode_stt_server(msgpack.packb([1, 2]))
    with pytest.raises(WireFormatError, match="validation"):
        moshi.decode_tts_server(msgpack.packb({"type": "Audio", "pcm": "loud"}))
    with pytest.raises(WireFormatError, match="validation"):
        moshi.decode_stt_server(msgpack.packb({"type": "Word", "text": "x"}))
    with pytest.raises(WireFormatError):
        moshi.decode_stt_server(b"\x00")  # the legacy end-of-stream byte is not a message


# Expected bytes written by hand from the msgpack spec (fixmap 0x8N, fixstr 0xaN, float 64
# 0xcb, float 32 0xca, array16 0xdc, positive fixint), independent of any msgpack encoder: the
# layout rmp_serde gives moshi-server's structs (a map, "type" first, fields in order).
def _s(text: str) -> bytes:
    return bytes([0xA0 | len(text)]) + text.encode()


HAND_WRITTEN = [
    (moshi.Ready(), b"\x81" + _s("type") + _s("Ready")),
    (
        moshi.Word(text="hi", start_time=1.5),
        b"\x83"
        + _s("type")
        + _s("Word")
        + _s("text")
        + _s("hi")
        + _s("start_time")
        + b"\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00",
    ),
    (
        moshi.EndWord(stop_time=2.0),
        b"\x82" + _s("type") + _s("EndWord") + _s("stop_time") + b"\xcb\x40\x00" + b"\x00" * 6,
    ),
    (
        moshi.Step(step_idx=3, prs=[0.5, 1.0], buffered_pcm=7),
        b"\x84"
        + _s("type")
        + _s("Step")
        + _s("step_idx")
        + b"\x03"
        + _s("prs")
        + b"\x92\xca\x3f\x00\x00\x00\xca\x3f\x80\x00\x00"
        + _s("buffered_pcm")
        + b"\x07",
    ),
    (
        moshi.TextOut(text="a", start_s=0.5, stop_s=1.0),
        b"\x84"
        + _s("type")
        + _s("Text")
        + _s("text")
        + _s("a")
        + _s("start_s")
        + b"\xcb\x3f\xe0"
        + b"\x00" * 6
        + _s("stop_s")
        + b"\xcb\x3f\xf0"
        + b"\x00" * 6,
    ),
]


@pytest.mark.parametrize(("msg", "expected"), HAND_WRITTEN, ids=lambda v: getattr(v, "type", ""))
def test_moshi_layout_against_hand_written_bytes(msg, expected: bytes) -> None:
    assert moshi.encode(msg) == expected


def test_audio_header_against_hand_written_bytes() -> None:
    packed = moshi.encode(moshi.Audio(pcm=np.full(1920, 0.5, dtype=np.float32)))
    head = b"\x82" + _s("type") + _s("Audio") + _s("pcm") + b"\xdc\x07\x80"  # array16 of 1920
    assert packed.startswith(head)
    assert packed[len(head) :] == b"\xca\x3f\x00\x00\x00" * 1920
    assert len(packed) == len(head) + 5 * 1920


def test_ogg_opus_bytes_are_msgpack_bin_and_round_trip() -> None:
    data = bytes([0x4F, 0x67, 0x67, 0x53, 0x00, 0xFF, 0x80])  # not UTF-8: must be bin, not str
    packed = moshi.encode(moshi.OggOpus(data=data))
    assert packed == b"\x82" + _s("type") + _s("OggOpus") + _s("data") + b"\xc4\x07" + data
    decoded = moshi.decode_stt_client(packed)
    assert isinstance(decoded, moshi.OggOpus) and decoded.data == data


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 300])
def test_map_headers_follow_the_msgpack_spec(n: int) -> None:
    """fixmap up to 15 entries, map16 from 16 (no message has that many fields yet)."""
    expected = msgpack.packb({f"k{i}": 0 for i in range(n)})
    header = moshi._map_header(n)
    assert header == expected[: len(header)]
    assert len(header) == (1 if n < 16 else 3)


def test_arrays_become_1d_float32() -> None:
    from_list = moshi.Audio(pcm=[0.5, -0.5])
    assert from_list.pcm.dtype == np.float32 and from_list.pcm.tolist() == [0.5, -0.5]
    from_f64 = moshi.Audio(pcm=np.array([0.25, 1.0], dtype=np.float64))
    assert from_f64.pcm.dtype == np.float32 and from_f64.pcm.tolist() == [0.25, 1.0]
    same = np.zeros(4, dtype=np.float32)
    assert moshi.Audio(pcm=same).pcm is same  # no copy on the hot path
    for bad, why in [
        (np.zeros((2, 3), dtype=np.float32), "expected a 1-D array of numbers, got 2-D"),
        ([[1.0, 2.0]], "expected a 1-D array of numbers, got 2-D"),
        ("loud", "expected an array of numbers"),
        ({"a": 1}, "expected an array of numbers"),
        (["x", "y"], "expected an array of numbers: could not convert string to float: 'x'"),
    ]:
        with pytest.raises(ValidationError) as e:
            moshi.Audio(pcm=bad)
        assert e.value.errors()[0]["msg"] == f"Value error, {why}", bad


@pytest.mark.parametrize(
    "decode,what",
    [
        (moshi.decode_stt_client, "STT client message"),
        (moshi.decode_stt_server, "STT server message"),
        (moshi.decode_tts_client, "TTS client message"),
        (moshi.decode_tts_server, "TTS server message"),
    ],
)
def test_decoder_errors_say_which_message_and_what_was_wrong(decode, what: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(WireFormatError) as e:
        decode(msgpack.packb([1, 2]))
    assert e.value.message == f"Invalid {what}: expected a map, got list"
    with pytest.raises(WireFormatError) as e:
        decode(msgpack.packb({"type": "Nope"}))
    assert e.value.message == f"Invalid {what}: 1 validation error(s)"
    with pytest.raises(WireFormatError) as e:
        decode(b"\xc1")
    assert e.value.message.startswith(f"Invalid {what}: not msgpack (")
    # Keys are strings, as rmp_serde writes them; any other key is not a message.
    with pytest.raises(WireFormatError, match=f"^Invalid {what}: not msgpack"):
        decode(msgpack.packb({"type": "Ready", 1: 2}))


def _general_audio(data: bytes) -> moshi.Audio:
    """The general path: msgpack and pydantic, whatever the layout."""
    decoded = moshi._decode(data, "TTS server message", moshi._TTS_SERVER)
    assert isinstance(decoded, moshi.Audio)
    return decoded


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 1920, 65535, 65536])
def test_audio_as_moshi_writes_it_takes_the_fast_path_and_equals_the_general_one(n: int) -> None:
    pcm = np.linspace(-1, 1, n, dtype=np.float32)
    data = moshi.encode(moshi.Audio(pcm=pcm))
    fast = moshi._decode_audio_fast(data)
    assert fast is not None
    assert fast.pcm.dtype == np.float32 and fast.pcm.ndim == 1
    assert np.array_equal(fast.pcm, pcm)
    assert np.array_equal(fast.pcm, _general_audio(data).pcm)
    for decode in (moshi.decode_stt_client, moshi.decode_tts_server):
        assert np.array_equal(decode(data).pcm, pcm)


def _audio_with(header: bytes, items: bytes) -> bytes:
    return b"\x82" + _s("type") + _s("Audio") + _s("pcm") + header + items


F32_HALF = b"\xca\x3f\x00\x00\x00"  # float 32, 0.5


@pytest.mark.parametrize(
    "data",
    [
        _audio_with(b"\x92", F32_HALF * 2),  # fixarray
        _audio_with(b"\xdc\x00\x02", F32_HALF * 2),  # array16, though 2 would fit a fixarray
        _audio_with(b"\xdd\x00\x00\x00\x02", F32_HALF * 2),  # array32
        _audio_with(b"\xdc\x00\x00", b""),  # an empty array16
        _audio_with(b"\xdd\x00\x00\x00\x00", b""),  # an empty array32
    ],
    ids=["fixarray", "array16", "array32", "empty array16", "empty array32"],
)
def test_every_array_header_takes_the_fast_path(data: bytes) -> None:
    fast = moshi._decode_audio_fast(data)
    assert fast is not None and fast.pcm.dtype == np.float32
    assert np.array_equal(fast.pcm, _general_audio(data).pcm)


@pytest.mark.parametrize(
    "data,expected",
    [
        (_audio_with(b"\x92", b"\xcb\x3f\xe0" + b"\x00" * 6 + F32_HALF), [0.5, 0.5]),  # float 64
        (_audio_with(b"\x92", F32_HALF + b"\x01"), [0.5, 1.0]),  # an integer item
        (_audio_with(b"\x92", F32_HALF * 2 + b"\xc0"), None),  # a byte after the array
        (_audio_with(b"\x93", F32_HALF * 2), None),  # an item short
        (_audio_with(b"\xdc\x00\x03", F32_HALF * 2), None),
        (_audio_with(b"\xdd\x00\x00\x00\x03", F32_HALF * 2), None),
        (_audio_with(b"\xdc\x00", b""), None),  # a header cut short
        (_audio_with(b"\xdd\x00\x00\x00", b""), None),
        (_audio_with(b"", b""), None),  # no array at all
        (_audio_with(b"\xc0", b""), None),  # nil
        (_audio_with(b"\xc0\x00\x00\x00\x00", b""), None),  # nil, then what looks like a count
        (_audio_with(b"\xdd\x01\x00\x00\x00", b""), None),  # 16,777,216 items announced
        (b"\x82" + _s("type") + _s("Audio") + _s("pcx") + b"\x90", None),
    ],
    ids=["float64", "int", "extra byte", "short", "short16", "short32", "cut16", "cut32",
         "nothing", "nil", "nil and count", "2**24", "other key"],
)  # fmt: skip
def test_any_other_layout_goes_the_general_way(data: bytes, expected: list | None) -> None:
    """Valid ones are decoded there; invalid ones are refused there, with its errors."""
    assert moshi._decode_audio_fast(data) is None
    if expected is None:
        with pytest.raises(WireFormatError):
            moshi.decode_tts_server(data)
    else:
        decoded = moshi.decode_tts_server(data)
        assert isinstance(decoded, moshi.Audio) and decoded.pcm.tolist() == expected


def test_the_audio_decoders_use_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Audio as moshi writes it never reaches msgpack and pydantic (~90 µs a frame)."""
    data = moshi.encode(moshi.Audio(pcm=np.full(1920, 0.5, dtype=np.float32)))

    def general(*args: object) -> None:
        raise AssertionError("the general path")

    monkeypatch.setattr(moshi, "_decode", general)
    for decode in (moshi.decode_stt_client, moshi.decode_tts_server):
        assert decode(data).pcm.tolist() == [0.5] * 1920
