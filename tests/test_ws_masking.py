"""services/ws_masking.py: the numpy masker gives wsproto's bytes exactly, chunk after chunk."""

from __future__ import annotations

import os

import numpy as np
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request

from unmute_trio.services import ws_masking


@pytest.mark.parametrize("seed", range(20))
def test_the_numpy_masker_equals_wsprotos_over_chunks_of_any_size(seed: int) -> None:
    rng = np.random.default_rng(seed)
    key = rng.bytes(4)
    reference, ours = ws_masking._ORIGINAL(key), ws_masking.NumpyXorMasker(key)
    # A frame's payload arrives in chunks, big and small, and the key runs on across them.
    for size in rng.choice([0, 1, 2, 3, 5, 255, 256, 257, 1021, 9611, 65537], size=12):
        data = rng.bytes(int(size))
        expected = reference.process(bytearray(data))
        got = ours.process(data)
        assert got == expected and type(got) is bytearray


def test_frames_masked_by_the_patch_are_read_back_by_wsproto(monkeypatch) -> None:
    from wsproto import frame_protocol

    monkeypatch.setattr(frame_protocol, "XorMaskerSimple", ws_masking._ORIGINAL)
    ws_masking.apply()
    assert frame_protocol.XorMaskerSimple is ws_masking.NumpyXorMasker
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="x", target="/")))
    assert [type(e) for e in server.events()] == [Request]
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    payloads = [os.urandom(n) for n in (9611, 3, 300, 70000)]
    for payload in payloads:
        server.receive_data(client.send(BytesMessage(data=payload)))
    received = b"".join(bytes(e.data) for e in server.events())
    assert received == b"".join(payloads)
