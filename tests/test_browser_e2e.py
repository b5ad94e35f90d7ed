"""The built-in page in real headless Chromium against the server and the simulators.

Chromium's fake microphone plays a WAV written here; the page encodes it with WebCodecs into
Ogg/Opus pages, the server transcribes it (STT simulator), answers (LLM simulator) and speaks
(TTS simulator); the page shows both sides and plays the bot through its AudioWorklet, whose
counters the test reads back. Everything runs on real time (a browser cannot share a virtual
clock), so waits are bounded and failures print the page's console.

Timeline of the fake microphone (seconds since the page opened it, i.e. since Connect):

- 0-6: silence while the bot greets (the greeting lasts ~4 s of audio);
- 6-7.5: speech → "Hello, how are you today?" (the STT simulator's first utterance); the bot
  answers ~2 s after it ends (pause detection), with ~5 s of audio;
- 10.5-13: speech again, over the answer → the server interrupts the bot
  (`unmute.interrupted_by_vad`) and the page flushes its playback; then a second answer;
- then silence until the test is done (the file is longer than the test needs).
"""

from __future__ import annotations

import base64
import io
import json
import wave
from pathlib import Path
from typing import Any

import numpy as np
import sphn
import trio

from tests.browser.cdp import Page
from tests.browser.stack import (
    Segment,
    browser_stack,
    open_page,
    require_chromium,
    skip_on_request,
    write_fake_microphone,
)
from tests.conftest import closed_port
from unmute_trio.testing.voice_client import VoiceClient

pytestmark = skip_on_request

CONVERSATION = (
    Segment(6.0),
    Segment(1.5, speech_seed=1),
    Segment(3.0),
    Segment(2.5, speech_seed=2),
    Segment(16.0),
)
FIRST_UTTERANCE = "Hello, how are you today?"
SECOND_UTTERANCE = "Can you tell me a fun fact about the ocean?"
WATERCOOLER = "unmute-prod-website/p329_022.wav"  # the voice of "Watercooler" in voices.yaml
PLAYBACK_RATE = 48_000
# What a failed wait prints besides the console: the counters and the transcript.
PAGE_STATE = "({stats: window.__unmuteStats, turns: window.__unmuteTranscript?.turns()})"


async def turns(page: Page) -> list[dict[str, Any]]:
    return await page.evaluate("window.__unmuteTranscript.turns()")


async def page_stats(page: Page) -> dict[str, Any]:
    return await page.evaluate("JSON.parse(JSON.stringify(window.__unmuteStats))")


def explain(stats: dict[str, Any], transcript: list[dict[str, Any]], page: Page) -> str:
    return (
        f"stats: {json.dumps(stats, indent=1)}\ntranscript: {json.dumps(transcript)}\n"
        f"{page.console_dump()}"
    )


async def test_browser_holds_a_conversation_and_is_interrupted(tmp_path: Path) -> None:
    require_chromium()
    wav = tmp_path / "microphone.wav"
    write_fake_microphone(wav, CONVERSATION)
    with trio.fail_after(90):
        async with browser_stack(tmp_path, wav) as bs:
            page = bs.page
            try:
                await open_page(bs)
                await page.click('#voices input[data-name="Watercooler"]')
                await page.click("#connect")
                await page.wait_for(
                    "__unmuteStats.state === 'connected'",
                    timeout_s=15,
                    what="the connection",
                    diagnostics=PAGE_STATE,
                )
                await page.wait_for(
                    f"__unmuteTranscript.turns().some(t => t.role === 'user'"
                    f" && t.text.includes({json.dumps(FIRST_UTTERANCE)}))",
                    timeout_s=25,
                    what="the user's words in the transcript",
                    diagnostics=PAGE_STATE,
                )
                await page.wait_for(
                    "__unmuteTranscript.turns().some(t => t.role === 'assistant'"
                    " && t.text.startsWith('You said Hello'))",
                    timeout_s=15,
                    what="the bot's answer in the transcript",
                    diagnostics=PAGE_STATE,
                )
                await page.wait_for(
                    "__unmuteTranscript.turns().some(t => t.role === 'assistant'"
                    " && t.text.startsWith('You said Can you tell me'))",
                    timeout_s=20,
                    what="the answer after the interruption",
                    diagnostics=PAGE_STATE,
                )
                stats = await page_stats(page)
                transcript = await turns(page)
                await bs.screenshot("browser-conversation.png")
                await bs.save_json("browser-conversation.json", stats, transcript)
                why = explain(stats, transcript, page)

                # The greeting and the first answer were played: over 2 s of real audio
                # came out of the worklet (the greeting alone is ~4 s).
                played = stats["playback"]["nonSilentSamples"]
                assert played > 2 * PLAYBACK_RATE, why
                # The barge-in reached the worklet as a flush, and the answer that was cut
                # is marked in the transcript.
                assert stats["events"].get("unmute.interrupted_by_vad", 0) >= 1, why
                assert stats["playback"]["flushes"] >= 1, why
                assert stats["playback"]["flushedSamples"] > 0, why  # stale audio dropped
                interrupted = [t for t in transcript if t["interrupted"]]
                assert interrupted and interrupted[0]["text"].startswith("You said Hello"), why
                users = [t["text"] for t in transcript if t["role"] == "user"]
                assert users[:2] == [FIRST_UTTERANCE, SECOND_UTTERANCE], why
                # The microphone was opened with the constraints the page asked for.
                assert stats["micSettings"]["echoCancellation"] is True, why
                assert stats["micSettings"]["noiseSuppression"] is False, why
                assert stats["pagesSent"] > 100, why  # 40 ms pages over 15+ s
                assert stats["errors"] == [], why
                # The voice picked in the page is the one the TTS was asked for.
                assert [c.voice for c in bs.stack.tts.connections_log][:1] == [WATERCOOLER], why

                await page.click("#connect")  # now "Disconnect"
                await page.wait_for(
                    "__unmuteStats.state === 'idle' && __unmuteStats.closes.length === 1",
                    timeout_s=10,
                    what="the page to disconnect",
                    diagnostics=PAGE_STATE,
                )
                with trio.fail_after(10):
                    while any(bs.stack.open_service_connections().values()):
                        await trio.sleep(0.05)
            except BaseException:
                await bs.screenshot("browser-conversation-failure.png")
                raise


PAGE_CHECKS = """(async () => {
  const ogg = await import('./static/ogg.js');
  const { JitterBuffer } = await import('./static/jitter-buffer.js');
  const { ENCODER_CONFIG } = await import('./static/mic.js');
  const { BotVoicePlayer } = await import('./static/player.js');
  const { recordVoiceSample } = await import('./static/voice-upload.js');
  const result = {};

  // CRC of the Ogg flavour (MSB-first 0x04c11db7, no inversion): known check value.
  result.crcCheck = ogg.oggCrc32(new TextEncoder().encode('123456789'));

  // The microphone path's encoder and Ogg writer: 1 s of a tone → base64 pages.
  const writer = new ogg.OggOpusWriter({ serial: 1234 });
  const pages = [...writer.headerPages()];
  const encoder = new AudioEncoder({
    output: (chunk) => {
      const packet = new Uint8Array(chunk.byteLength);
      chunk.copyTo(packet);
      const page = writer.addPacket(packet, 960);
      if (page) pages.push(page);
    },
    error: (e) => { throw e; },
  });
  encoder.configure(ENCODER_CONFIG);
  const tone = new Float32Array(24000);
  for (let i = 0; i < tone.length; i++) tone[i] = 0.3 * Math.sin(2 * Math.PI * 440 * i / 24000);
  encoder.encode(new AudioData({ format: 'f32', sampleRate: 24000, numberOfFrames: 24000,
                                 numberOfChannels: 1, timestamp: 0, data: tone }));
  await encoder.flush();
  const flushed = writer.flush();
  if (flushed) pages.push(flushed);
  const toB64 = (b) => {
    let s = '';
    for (const x of b) s += String.fromCharCode(x);
    return btoa(s);
  };
  result.micPages = pages.map(toB64);
  // The reader reads back what the writer wrote, packet for packet.
  const reader = new ogg.OggPacketReader();
  const all = new Uint8Array(pages.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of pages) { all.set(p, at); at += p.length; }
  const packets = [...reader.push(all.subarray(0, 100)), ...reader.push(all.subarray(100))];
  result.readBack = packets.map((p) => p.data.length);
  result.readBackBos = packets.map((p) => p.bos);

  // The jitter buffer: waits for 80 ms, plays, drains at the end, flushes at once.
  const jb = new JitterBuffer({ sampleRate: 48000 });
  const out = new Float32Array(128);
  const ones = (n) => new Float32Array(n).fill(0.5);
  jb.push(ones(3000));
  jb.render(out);
  result.waitsBelowStart = out.every((v) => v === 0);
  jb.push(ones(1000));
  jb.render(out);
  result.playsAtStart = out[out.length - 1] === 0.5;
  result.flushed = jb.flush();
  for (let i = 0; i < 4; i++) jb.render(out);
  result.silentAfterFlush = out.every((v) => v === 0) && jb.buffered === 0;
  jb.push(ones(1000));
  jb.markEnd();
  jb.render(out);
  result.endPlaysTail = out[out.length - 1] === 0.5;
  result.stats = jb.stats;

  // The bot path: the server's Ogg/Opus (written by sphn, given by the test) → decoder → worklet.
  const ctx = new AudioContext({ sampleRate: 48000 });
  await ctx.audioWorklet.addModule('./static/playback-worklet.js');
  let last = null;
  const player = new BotVoicePlayer(ctx, (s) => { last = s; }, (e) => { throw e; });
  for (const chunk of window.__botOgg) player.pushBase64(chunk);
  await player.endOfTurn();
  const deadline = performance.now() + 5000;
  while (performance.now() < deadline && !(last && last.renderedSamples >= 40000)) {
    await new Promise((r) => setTimeout(r, 50));
  }
  result.botPlayback = last;
  player.close();
  await ctx.close();

  // 1 s from the (fake) microphone as a WAV, as the voice recorder uploads it; the recorder's
  // context runs at the default rate, so the capture worklet resamples.
  const probe = new AudioContext();
  result.defaultRate = probe.sampleRate;
  await probe.close();
  const wav = await recordVoiceSample('./static/capture-worklet.js', 1);
  result.wav = toB64(new Uint8Array(await wav.arrayBuffer()));
  return result;
})()"""


def sphn_ogg_chunks(seconds: float) -> list[str]:
    """A 440 Hz tone encoded by the server's writer (sphn), as base64 messages."""
    t = np.arange(int(24000 * seconds)) / 24000
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    writer = sphn.OpusStreamWriter(24000)
    chunks = []
    for start in range(0, len(pcm), 1920):
        data = writer.append_pcm(pcm[start : start + 1920])
        if data:
            chunks.append(base64.b64encode(data).decode())
    return chunks


async def test_page_codecs_buffer_and_voice_upload(tmp_path: Path) -> None:
    require_chromium()
    wav = tmp_path / "microphone.wav"
    write_fake_microphone(wav, [Segment(0.5), Segment(2.0, speech_seed=3)])
    with trio.fail_after(60):
        async with browser_stack(tmp_path, wav) as bs:
            page = bs.page
            await open_page(bs)
            await page.evaluate(f"window.__botOgg = {json.dumps(sphn_ogg_chunks(1.0))}")
            result = await page.evaluate(PAGE_CHECKS)
            short = {k: v for k, v in result.items() if k not in ("micPages", "wav")}
            why = f"result: {json.dumps(short)}\n{page.console_dump()}"

            assert result["crcCheck"] == 0x89A1897F, why
            # The page's Ogg stream decodes with the server's decoder (sphn), to ~1 s of audio.
            reader = sphn.OpusStreamReader(24000)
            decoded = np.concatenate(
                [
                    np.asarray(reader.append_bytes(base64.b64decode(p)), np.float32).reshape(-1)
                    for p in result["micPages"]
                ]
            )
            assert 0.9 * 24000 <= len(decoded) <= 1.05 * 24000, why
            assert np.sqrt(np.mean(decoded[4800:] ** 2)) > 0.1, why  # the tone, not silence
            pages = [base64.b64decode(p) for p in result["micPages"]]
            assert pages[0][5] == 0x02 and pages[0][28:36] == b"OpusHead", why  # BOS first
            assert pages[1][28:36] == b"OpusTags", why
            assert all(p[5] == 0 for p in pages[1:]), why
            assert all(p[26] == 2 for p in pages[2:-1]), why  # two 20 ms packets per page
            assert result["readBack"][:2] == [19, len(pages[1]) - 28], why
            assert result["readBackBos"][0] is True and not any(result["readBackBos"][1:]), why

            assert result["waitsBelowStart"] and result["playsAtStart"], why
            assert result["flushed"] > 3000, why
            assert result["silentAfterFlush"] and result["endPlaysTail"], why

            # The server's audio decoded and played through the worklet (48 kHz).
            playback = result["botPlayback"]
            assert playback["renderedSamples"] >= 40000, why
            assert playback["nonSilentSamples"] > 30000, why

            # The voice recorder's WAV: 1 s at 24 kHz (resampled by the capture worklet from
            # the context's rate), holding the fake microphone's speech.
            assert result["defaultRate"] != 24000, why
            with wave.open(io.BytesIO(base64.b64decode(result.pop("wav")))) as recording:
                assert (recording.getframerate(), recording.getnchannels()) == (24000, 1), why
                assert recording.getnframes() == 24000, why
                pcm = np.frombuffer(recording.readframes(24000), "<i2") / 32768
            assert np.sqrt(np.mean(pcm**2)) > 0.02, why

            # Upload a custom voice through the page's file input: it is cloned and selected.
            await upload_file(page, "#voice-file", wav)
            await page.wait_for(
                "document.querySelector('#voices input:checked')"
                "?.dataset.voice.startsWith('custom:')",
                timeout_s=15,
                what="the uploaded voice to be selected",
            )
            assert await page.evaluate("__unmuteStats.errors") == [], why
            await bs.screenshot("browser-voice-upload.png")


async def upload_file(page: Page, selector: str, path: Path) -> None:
    document = await page.send("DOM.getDocument", {"depth": 0})
    node = await page.send(
        "DOM.querySelector", {"nodeId": document["root"]["nodeId"], "selector": selector}
    )
    await page.send("DOM.setFileInputFiles", {"nodeId": node["nodeId"], "files": [str(path)]})


async def test_page_shows_services_down_and_server_errors(tmp_path: Path) -> None:
    require_chromium()
    wav = tmp_path / "microphone.wav"
    write_fake_microphone(wav, [Segment(1.0)])
    with trio.fail_after(60):
        # The LLM is down: the page says so and does not offer to connect.
        async with browser_stack(
            tmp_path / "a", wav, llm_url=f"http://127.0.0.1:{closed_port()}"
        ) as bs:
            page = bs.page
            await page.navigate(bs.stack.base_url + "/")
            notice = await page.wait_for(
                "!document.querySelector('#notice').hidden"
                " && document.querySelector('#notice').textContent",
                timeout_s=15,
                what="the notice about the LLM",
                diagnostics=PAGE_STATE,
            )
            assert "cannot reach: LLM" in notice, page.console_dump()
            state = await page.evaluate(
                "({connect: document.querySelector('#connect').disabled,"
                " llm: document.querySelector('#health [data-service=llm_up]').className})"
            )
            assert state == {"connect": True, "llm": "down"}, page.console_dump()

        # The server is full: its fatal error is shown, and the page is ready to try again.
        async with browser_stack(tmp_path / "b", wav, max_sessions=1) as bs:
            page = bs.page
            await open_page(bs)
            async with VoiceClient.connect(bs.stack.realtime_url):
                with trio.fail_after(5):
                    while bs.stack.state.active_sessions < 1:
                        await trio.sleep(0.02)
                await page.click("#connect")
                await page.wait_for(
                    "__unmuteStats.closes.length === 1 && __unmuteStats.state === 'idle'",
                    timeout_s=15,
                    what="the refused connection to end",
                    diagnostics=PAGE_STATE,
                )
            shown = await page.evaluate(
                "[...document.querySelectorAll('#errors .error span')].map(e => e.textContent)"
            )
            assert len(shown) == 1 and "limit of 1 simultaneous" in shown[0], page.console_dump()
            assert await page.evaluate("__unmuteStats.closes[0].code") == 1013
            assert not await page.evaluate("document.querySelector('#connect').disabled")
            await bs.screenshot("browser-server-full.png")

        # The server needs an API key: the page asks for one, says so when it is missing, and
        # connects with it (sent as the openai-insecure-api-key subprotocol).
        async with browser_stack(tmp_path / "c", wav, api_keys=("page-key",)) as bs:
            page = bs.page
            await open_page(bs)
            assert not await page.evaluate("document.querySelector('#api-key-row').hidden")
            await page.click("#connect")
            await page.wait_for(
                "__unmuteStats.closes.length === 1 && __unmuteStats.state === 'idle'",
                timeout_s=15,
                what="the connection without a key to be refused",
                diagnostics=PAGE_STATE,
            )
            shown = await page.evaluate(
                "[...document.querySelectorAll('#errors .error span')].map(e => e.textContent)"
            )
            assert any("Check the API key" in s for s in shown), (shown, page.console_dump())
            assert bs.stack.state.active_sessions == 0
            await page.evaluate(
                "(() => { const k = document.querySelector('#api-key'); k.value = 'page-key';"
                " k.dispatchEvent(new Event('change')); })()"
            )
            await page.click("#connect")
            await page.wait_for(
                "__unmuteStats.state === 'connected'",
                timeout_s=15,
                what="the connection with the key",
                diagnostics=PAGE_STATE,
            )
            assert bs.stack.state.active_sessions == 1
            assert await page.evaluate("localStorage.getItem('unmuteTrioApiKey')") == "page-key"
            await page.click("#connect")  # disconnect
