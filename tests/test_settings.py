from __future__ import annotations

import pytest

from unmute_trio.settings import Settings, SettingsError, http_to_ws, ws_to_http


def test_defaults_match_the_original() -> None:
    s = Settings.from_env({})
    assert s.stt_url == "ws://localhost:8090"
    assert s.tts_url == "ws://localhost:8089"
    assert s.llm_url == "http://localhost:8091"
    assert s.voice_cloning_url == "http://localhost:8092"
    assert s.llm_model is None and s.llm_api_key is None
    assert s.kyutai_api_key == "public_token"
    assert s.cors_origins == ("http://localhost", "http://localhost:3000")
    assert s.max_upload_bytes == 4 * 1024 * 1024
    assert s.max_sessions == 64


def test_http_urls_are_converted_for_stt_and_tts() -> None:
    s = Settings.from_env(
        {"KYUTAI_STT_URL": "https://stt.example/stt-server/", "KYUTAI_TTS_URL": "http://tts:8080"}
    )
    assert s.stt_url == "wss://stt.example/stt-server"
    assert s.tts_url == "ws://tts:8080"
    assert http_to_ws("https://a") == "wss://a" and ws_to_http("wss://a") == "https://a"


def test_values_are_read() -> None:
    s = Settings.from_env(
        {
            "KYUTAI_LLM_URL": "https://openrouter.ai/api",
            "KYUTAI_LLM_MODEL": "@preset/gpt-oss-120b",
            "KYUTAI_LLM_API_KEY": "sk-1",
            "UNMUTE_MAX_SESSIONS": "200",
            "UNMUTE_CORS_ORIGINS": "https://a.example, https://b.example/",
            "KYUTAI_RECORDINGS_DIR": "/recordings",
            "UNMUTE_KYUTAI_API_KEY": "secret",
        }
    )
    assert s.llm_url == "https://openrouter.ai/api"
    assert s.llm_model == "@preset/gpt-oss-120b"
    assert s.max_sessions == 200
    assert s.cors_origins == ("https://a.example", "https://b.example")
    assert str(s.recordings_dir) == "/recordings"
    assert s.kyutai_api_key == "secret"


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("KYUTAI_STT_URL", "ftp://stt:8090", "must start with"),
        ("KYUTAI_TTS_URL", "ws://", "no host"),
        ("KYUTAI_LLM_URL", "ws://llm:8000", "must start with http://"),
        ("KYUTAI_LLM_URL", "http://llm:99999", "invalid port"),
        ("KYUTAI_VOICE_CLONING_URL", "http://vc:8092/?x=1", "query"),
        ("UNMUTE_MAX_SESSIONS", "lots", "whole number"),
        ("UNMUTE_MAX_SESSIONS", "0", "minimum"),
        ("UNMUTE_HEALTH_TIMEOUT_S", "-1", "positive"),
        ("UNMUTE_CORS_ORIGINS", "localhost:3000", "not an origin"),
        ("UNMUTE_LOG_LEVEL", "loud", "not one of"),
    ],
)
def test_invalid_values_name_the_variable(variable: str, value: str, reason: str) -> None:
    with pytest.raises(SettingsError) as e:
        Settings.from_env({variable: value})
    assert e.value.variable == variable
    assert str(e.value).startswith(variable + ":")
    assert reason in e.value.reason


@pytest.mark.parametrize(
    ("value", "expected"), [(None, "opus"), ("pcm", "pcm"), (" OPUS ", "opus")]
)
def test_tts_audio(value: str | None, expected: str) -> None:
    env = {} if value is None else {"UNMUTE_TTS_AUDIO": value}
    assert Settings.from_env(env).tts_audio == expected


def test_tts_audio_refuses_other_values() -> None:
    with pytest.raises(SettingsError, match="UNMUTE_TTS_AUDIO: 'wav' is not one of opus, pcm"):
        Settings.from_env({"UNMUTE_TTS_AUDIO": "wav"})
