"""Which dialect a ``/v1/realtime`` client speaks (``protocol/dialects.py``), rule by rule."""

from __future__ import annotations

import pytest

from unmute_trio.protocol.dialects import UnknownDialect, choose_dialect


def test_the_dialect_query_parameter_wins_over_everything() -> None:
    assert choose_dialect({"dialect": "unmute", "model": "m"}, []) == "unmute"
    assert choose_dialect({"dialect": "openai"}, ["realtime"]) == "openai"
    assert choose_dialect({"dialect": "unmute"}, []) == "unmute"


def test_an_unknown_dialect_is_refused_with_the_names_it_could_be() -> None:
    for asked in ("", "Unmute", "openai ", "moshi"):
        with pytest.raises(UnknownDialect) as refused:
            choose_dialect({"dialect": asked, "model": "m"}, ["realtime"])
        assert str(refused.value) == f"unknown dialect {asked!r}: use 'unmute' or 'openai'"
        assert isinstance(refused.value, ValueError)


def test_a_model_means_openai_even_with_the_realtime_subprotocol() -> None:
    assert choose_dialect({"model": "gpt-realtime"}, ["realtime"]) == "openai"
    assert choose_dialect({"model": ""}, ["realtime", "openai-insecure-api-key.k"]) == "openai"


def test_the_realtime_subprotocol_means_unmute_and_anything_else_openai() -> None:
    assert choose_dialect({}, ["realtime"]) == "unmute"
    assert choose_dialect({"api_key": "k"}, ["openai-insecure-api-key.k", "realtime"]) == "unmute"
    assert choose_dialect({}, []) == "openai"
    assert choose_dialect({}, ["something-else", "Realtime"]) == "openai"
