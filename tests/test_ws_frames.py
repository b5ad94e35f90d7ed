"""services/ws_frames.py: our client frames read back by wsproto's server, and wsproto's server
frames read by ours, at every length encoding; every rule a server's frames must follow."""

from __future__ import annotations

import os

import pytest
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from tests.ws_wire import server_frame
from unmute_trio.services import ws_frames
from unmute_trio.services.ws_frames import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    FrameError,
    FrameReader,
)

# Each side of every boundary of the 7-bit, 16-bit and 64-bit length encodings, and of the
# switch from the Python-int mask to numpy's.
SIZES = [0, 1, 3, 4, 5, 125, 126, 127, 1023, 1024, 1025, 9600, 65535, 65536, 70001]


def read_all(
    reader: FrameReader, data: bytes, *, step: int | None = None
) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    chunks = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for chunk in chunks:
        reader.feed(chunk)
        while (item := reader.next()) is not None:
            out.append(item)
    return out


@pytest.mark.parametrize("size", SIZES)
def test_client_frames_are_read_back_by_wsproto_as_sent(size: int) -> None:
    payload = os.urandom(size)
    server = Connection(ConnectionType.SERVER)
    server.receive_data(ws_frames.client_frame(BINARY, payload))
    events = list(server.events())
    assert len(events) == 1 and isinstance(events[0], BytesMessage)
    assert events[0].data == payload and events[0].message_finished


def test_a_client_frame_is_laid_out_as_rfc_6455_says() -> None:
    key = b"\x01\x02\x03\x04"
    built = ws_frames.client_frame(PONG, b"abcde", key)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(b"abcde"))
    assert built == b"\x8a\x85" + key + masked  # FIN + pong; mask bit + length 5
    assert ws_frames.client_frame(BINARY, bytes(300), key)[:4] == b"\x82\xfe\x01\x2c"
    assert ws_frames.client_frame(BINARY, bytes(70000), key)[:10] == b"\x82\xff" + (70000).to_bytes(
        8, "big"
    )


@pytest.mark.parametrize("size", SIZES)
def test_masking_is_the_xor_with_the_key_repeated(size: int) -> None:
    payload, key = os.urandom(size), os.urandom(4)
    expected = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    assert ws_frames.mask(payload, key) == expected
    assert ws_frames.mask(expected, key) == payload


@pytest.mark.parametrize("step", [None, 1, 7, 4096])
def test_wsproto_server_frames_are_read_whole_however_they_are_cut(step: int | None) -> None:
    server = Connection(ConnectionType.SERVER)
    payloads = [os.urandom(size) for size in SIZES]
    wire = b"".join(server.send(BytesMessage(data=p)) for p in payloads)
    wire += server.send(TextMessage(data="hé")) + server.send(Ping(payload=b"p"))
    wire += server.send(Pong(payload=b"q"))
    wire += server.send(CloseConnection(code=1001, reason="bye"))
    got = read_all(FrameReader(1 << 20), wire, step=step)
    assert got == [(BINARY, p) for p in payloads] + [
        (TEXT, "hé".encode()),
        (PING, b"p"),
        (PONG, b"q"),
        (CLOSE, b"\x03\xe9bye"),
    ]


def test_fragments_are_joined_around_control_frames() -> None:
    wire = (
        server_frame(BINARY, b"ab", fin=False)
        + server_frame(PING, b"1")
        + server_frame(CONTINUATION, b"", fin=False)
        + server_frame(CONTINUATION, b"cd", fin=False)
        + server_frame(PONG, b"2")
        + server_frame(CONTINUATION, b"e")
        + server_frame(TEXT, b"next")
    )
    for step in (None, 1):
        assert read_all(FrameReader(100), wire, step=step) == [
            (PING, b"1"),
            (PONG, b"2"),
            (BINARY, b"abcde"),
            (TEXT, b"next"),
        ]


def test_the_size_limit_counts_the_whole_message_and_refuses_from_the_header() -> None:
    reader = FrameReader(10)
    assert read_all(reader, server_frame(BINARY, b"x" * 10)) == [(BINARY, b"x" * 10)]
    assert read_all(reader, server_frame(BINARY, b"x" * 6, fin=False)) == []
    with pytest.raises(FrameError, match="more than 10 bytes"):
        # Only the header of the fragment that goes over: the payload is never waited for.
        read_all(reader, server_frame(CONTINUATION, b"y" * 5)[:2])
    reader = FrameReader(1 << 20)
    with pytest.raises(FrameError, match="more than"):
        read_all(reader, b"\x82\x7f" + (1 << 62).to_bytes(8, "big"))


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (server_frame(BINARY, b"", first=0xC2), "reserved bits"),  # RSV1: deflate, never offered
        (server_frame(BINARY, b"", first=0x92), "reserved bits"),
        (b"\x82\x81abcdx", "masked frame from the server"),
        (server_frame(0x3, b""), "unknown opcode 0x3"),
        (server_frame(0xB, b""), "unknown opcode 0xb"),
        (server_frame(PING, b"", fin=False), "fragmented control frame"),
        (server_frame(CLOSE, b"\x03\xe8" + b"r" * 124), "control frame of 126 bytes"),
        (server_frame(CONTINUATION, b"x"), "continuation frame outside a message"),
        (
            server_frame(TEXT, b"a", fin=False) + server_frame(BINARY, b"b"),
            "before the previous one's last",
        ),
    ],
)
def test_frames_a_server_may_not_send_are_refused(wire: bytes, why: str) -> None:
    with pytest.raises(FrameError, match=why):
        read_all(FrameReader(1 << 20), wire)


def test_close_payloads() -> None:
    assert ws_frames.parse_close(b"") == (1005, None)
    assert ws_frames.parse_close(ws_frames.close_payload(1000)) == (1000, None)
    assert ws_frames.parse_close(ws_frames.close_payload(4001, "été")) == (4001, "été")
    for bad, why in [
        (b"\x03", "one-byte"),
        ((1005).to_bytes(2, "big"), "invalid code 1005"),  # reserved: never on the wire
        ((999).to_bytes(2, "big"), "invalid code 999"),
        ((2000).to_bytes(2, "big"), "invalid code 2000"),
        (b"\x03\xe8\xff", "not UTF-8"),
    ]:
        with pytest.raises(FrameError, match=why):
            ws_frames.parse_close(bad)


def test_a_buffer_of_many_frames_is_consumed_without_keeping_them() -> None:
    reader = FrameReader(1 << 20)
    wire = (
        b"".join(server_frame(BINARY, os.urandom(1000)) for _ in range(200))
        + server_frame(BINARY, b"ab")[:3]
    )
    assert len(read_all(reader, wire)) == 200
    # Only the partial frame stays buffered: what was read is dropped from the front.
    assert len(reader._buf) - reader._pos == 3
    assert len(reader._buf) < 70_000


def test_a_message_in_too_many_fragments_is_refused_even_if_they_are_empty() -> None:
    reader = FrameReader(1 << 20)
    wire = server_frame(BINARY, b"", fin=False) + server_frame(CONTINUATION, b"", fin=False) * 1023
    assert read_all(reader, wire) == []
    with pytest.raises(FrameError, match="more than 1024 fragments") as info:
        read_all(reader, server_frame(CONTINUATION, b""))
    assert info.value.code == 1009


def test_fragments_are_kept_in_one_buffer() -> None:
    reader = FrameReader(1 << 20)
    wire = server_frame(TEXT, b"a", fin=False) + server_frame(CONTINUATION, b"bc", fin=False)
    assert read_all(reader, wire) == []
    assert reader._message == bytearray(b"abc")  # not a list of tiny bytes objects
    assert read_all(reader, server_frame(CONTINUATION, b"d")) == [(TEXT, b"abcd")]
    assert reader._message == bytearray()


@pytest.mark.parametrize(
    "head",
    [b"\x82\x7e\x00\x7d", b"\x82\x7f" + (65535).to_bytes(8, "big")],
    ids=["16-bit length under 126", "64-bit length under 65536"],
)
def test_a_length_not_in_its_shortest_form_is_refused(head: bytes) -> None:
    with pytest.raises(FrameError, match="shortest form"):
        read_all(FrameReader(1 << 20), head)


def test_a_server_reads_masked_frames_and_refuses_unmasked_ones() -> None:
    reader = FrameReader(1 << 20, masked=True)
    payloads = [os.urandom(size) for size in SIZES]
    wire = b"".join(ws_frames.client_frame(BINARY, p) for p in payloads)
    assert read_all(reader, wire, step=999) == [(BINARY, p) for p in payloads]
    with pytest.raises(FrameError, match="unmasked frame from the client"):
        read_all(reader, server_frame(BINARY, b"x"))
