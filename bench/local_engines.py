"""Local speech engines: STT word error rate and latency, TTS speed and time to first audio.

    taskset -c 1 .venv/bin/python bench/local_engines.py [--quick] [--json out.json]

Everything runs in this one process (the engines serve on loopback sockets, driven by the
server's own clients ``connect_stt`` and ``connect_tts``), on the CPUs it is allowed (printed
first): run it under ``taskset -c 1`` for the one-core figures. Results and how to read them:
docs/local-engines-bench.md.

- **STT WER**: the sentences below spoken by espeak-ng (en-us, 150 wpm) and by Piper, each after
  0.5 s of silence; (a) offline, ``MoonshineRecognizer.transcribe`` on the whole utterance;
  (b) streaming, through ``LocalSttEngine``, one 1920-sample frame every 80 ms (frame k is sent
  when its last sample would have been recorded), then silence until the first ``Step`` past
  the speech with ``prs[2] > 0.6``. WER = total word errors / total reference words.
- **Latencies** (streaming, wall clock): audio position x counts as spoken at start + x. Last
  word: end of the speech (last 10 ms window within 40 dB of the loudest) → the last ``Word``
  message. All words: ``EndWord.stop_time`` (the engine's estimate; Moonshine has no
  timestamps) → its ``Word``; for Piper speech transcribed exactly, also Piper's own word ends.
  End of turn: end of the speech → the first ``Step`` past it with ``prs[2] > 0.6``.
- **RTF**: decode (synthesis) time / audio duration, CPU time of the calling thread and wall.
- **TTS first audio**: a 10-word reply sent word by word (``--llm-words-per-second``), then
  ``Eos``; from the first word sent to the first ``Audio`` message.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import trio

from unmute_trio.engines.moonshine import MoonshineRecognizer
from unmute_trio.engines.piper_voice import PiperSynthesizer
from unmute_trio.engines.stt_server import LocalSttConfig, LocalSttEngine
from unmute_trio.engines.transcriber import PAUSE_HORIZONS_S
from unmute_trio.engines.tts_server import LocalTtsConfig, LocalTtsEngine
from unmute_trio.engines.vad import SileroVadModel
from unmute_trio.loadtest.procfs import machine
from unmute_trio.protocol.moshi import Audio, EndWord, Step, Word
from unmute_trio.services.stt import connect_stt
from unmute_trio.services.tts import connect_tts

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' speech helpers
from tests.local_engines import espeak, normalise_words, resample, word_errors

RATE, FRAME, LEAD_S = 24_000, 1920, 0.5
TARGETS = {"wer": 0.12, "word_latency_s": 1.0, "tts_first_audio_s": 0.5}
# Silence after the last voiced VAD window at which prs[2] (2 s horizon) reaches 0.6, by design.
_H = PAUSE_HORIZONS_S[2]
END_OF_TURN_FLOOR_S = _H / 2 + _H / 10 * math.log((0.6 - 0.02) / (0.98 - 0.6))
QUOTES = re.compile(r"(?<![A-Za-z])'|'(?![A-Za-z])")  # not an apostrophe inside a word
CLAUSE_END = (".", ",", "!", "?", ";", ":")

# Things people say to a voice assistant; no numerals (the scoring does not equate "7" and
# "seven").
SENTENCES = """
What is the weather going to be like tomorrow morning?
Remind me to call my mother when I get home.
Can you recommend a good Italian restaurant near here?
Turn off the lights in the living room.
How long does it take to boil an egg?
Add milk, bread and coffee to my shopping list.
What time does the pharmacy close tonight?
Play some relaxing music while I cook dinner.
I would like to book a table for dinner on Friday.
Who wrote the novel Pride and Prejudice?
Please read me the latest news about the economy.
How do I get to the nearest train station from here?
Tell me a short joke about cats.
What is the difference between a virus and a bacterium?
I am feeling tired today, can you suggest a quick workout?
Send a message to Sarah saying I will be late.
Why is the sky blue during the day but red at sunset?
Translate good morning into Spanish for me.
Could you explain how a heat pump works in simple terms?
My flight was cancelled and I need to find another one.
What should I cook for dinner if I only have rice and eggs?
Wake me up early tomorrow so I can go running.
Is it going to rain this weekend in London?
Thanks, that was really helpful, have a nice evening.
""".splitlines()[1:]
# Ten words each. The TTS speaks a chunk as soon as a word ends a clause.
REPLIES = """
Sure, tomorrow looks sunny with a light breeze all day.
The pharmacy on Main Street closes at nine this evening.
I have added milk, bread and coffee to your list.
A hard boiled egg takes about nine minutes to cook.
Okay, I will remind you to call your mother tonight.
Jane Austen wrote Pride and Prejudice, published in eighteen thirteen.
The sky looks blue because air scatters blue light more.
I found three Italian restaurants within walking distance of here.
Try this quick workout: squats, push ups, and a plank.
Your message to Sarah has been sent, she will know.
Expect rain in London on Saturday, so bring an umbrella.
A heat pump moves warmth from outside into your home.
""".splitlines()[1:]


@dataclass
class Heard:
    text: str
    arrival: float  # seconds after the stream started (audio position x is spoken at x)
    stop: float = math.nan  # EndWord.stop_time


@dataclass
class Utterance:
    voice: str  # "espeak-ng" or "Piper"
    text: str
    pcm: np.ndarray  # 24 kHz: LEAD_S of silence, then the speech
    speech_end: float  # seconds into pcm, by energy
    word_ends: list[float] | None = None  # Piper's alignment, seconds into pcm
    offline: str = ""
    heard: list[Heard] = field(default_factory=list)
    end_of_turn: float | None = None  # arrival of the first Step past the speech, prs[2] > 0.6
    send_lag: float = 0.0  # the sender's worst delay behind real time

    @property
    def streamed(self) -> str:
        return " ".join(h.text for h in self.heard)


@dataclass
class Cost:
    """Seconds of CPU (of the calling thread) and of wall clock spent on seconds of audio."""

    cpu: float = 0.0
    wall: float = 0.0
    audio: float = 0.0
    calls: int = 0

    @contextmanager
    def timing(self, audio_s: float) -> Iterator[None]:
        cpu, wall = time.thread_time(), time.perf_counter()
        yield
        self.cpu += time.thread_time() - cpu
        self.wall += time.perf_counter() - wall
        self.audio, self.calls = self.audio + audio_s, self.calls + 1

    def rtf(self, audio: float | None = None) -> str:
        audio = audio or self.audio
        return f"{self.cpu / audio:.3f} / {self.wall / audio:.3f}"


class TimedRecognizer:
    """Moonshine, adding up the time of every decode the engine asks for."""

    def __init__(self, inner: MoonshineRecognizer) -> None:
        self.inner, self.cost = inner, Cost()

    def transcribe(self, audio: np.ndarray) -> str:
        with self.cost.timing(len(audio) / 16_000):
            return self.inner.transcribe(audio)


def errors(reference: str, heard: str) -> int:
    """Word edit distance (the tests' ``word_errors``), quotation marks removed first."""
    return word_errors(reference, QUOTES.sub(" ", heard))


def speech_end(pcm: np.ndarray, window: int = 240) -> float:
    """End of the last 10 ms window within 40 dB of the loudest one, in seconds."""
    n = len(pcm) // window
    rms = np.sqrt(np.mean(pcm[: n * window].reshape(n, window) ** 2, axis=1))
    return float(np.nonzero(rms > rms.max() * 0.01)[0][-1] + 1) * window / RATE


def utterances(texts: list[str], synth: PiperSynthesizer, cost: Cost) -> list[Utterance]:
    lead = np.zeros(round(LEAD_S * RATE), dtype=np.float32)
    out = []
    for text in texts:
        pcm = np.concatenate([lead, espeak(text, voice="en-us", rate=150)])
        out.append(Utterance("espeak-ng", text, pcm, speech_end(pcm)))
    for text in texts:
        with cost.timing(0.0):
            synthesis = synth.synthesize(text)
        cost.audio += len(synthesis.audio) / RATE
        pcm = np.concatenate([lead, synthesis.audio.astype(np.float32)])
        ends = [LEAD_S + w.stop_s for w in synthesis.words]
        out.append(Utterance("Piper", text, pcm, speech_end(pcm), ends))
    return out


async def stream(url: str, utt: Utterance) -> None:
    """``utt`` through the STT at real-time pace, then silence until the end-of-turn Step."""
    pcm = utt.pcm
    async with connect_stt(url, handshake_timeout_s=10) as stt:
        start = trio.current_time()

        async def send() -> None:
            for k in range(10**6):  # frame k goes out when its last sample would be recorded
                due = start + (k + 1) * FRAME / RATE
                await trio.sleep_until(due)
                utt.send_lag = max(utt.send_lag, trio.current_time() - due)
                frame = pcm[k * FRAME : (k + 1) * FRAME]
                await stt.send_audio(np.pad(frame, (0, FRAME - len(frame))))

        with trio.move_on_after(len(pcm) / RATE + 20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                while utt.end_of_turn is None:
                    message = await stt.receive()
                    now = trio.current_time() - start
                    if isinstance(message, Word):
                        utt.heard.append(Heard(message.text, now))
                    elif isinstance(message, EndWord) and utt.heard:
                        utt.heard[-1].stop = message.stop_time
                    elif isinstance(message, Step) and message.prs[2] > 0.6:
                        if (message.step_idx + 1) * FRAME / RATE > utt.speech_end:
                            utt.end_of_turn = now
                nursery.cancel_scope.cancel()


async def first_audio(url: str, reply: str, words_per_s: float) -> tuple[float, float]:
    """(first word sent → first Audio, seconds of audio) for one reply sent word by word."""
    first, samples, words = math.nan, 0, reply.split()
    async with connect_tts(url, handshake_timeout_s=10) as tts:
        start = trio.current_time()

        async def send() -> None:
            for i, word in enumerate(words):
                await trio.sleep_until(start + i / words_per_s)
                await tts.send_text(word)
            await trio.sleep_until(start + len(words) / words_per_s)
            await tts.send_eos()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            while (message := await tts.receive()) is not None:
                if isinstance(message, Audio):
                    if math.isnan(first):
                        first = trio.current_time() - start
                    samples += len(message.pcm)
    return first, samples / RATE


async def online(
    utts: list[Utterance], replies: list[str], stt: LocalSttEngine, tts: LocalTtsEngine, wps: float
) -> list[tuple[float, float]]:
    async with trio.open_nursery() as nursery:
        stt_url = f"ws://127.0.0.1:{await nursery.start(stt.serve)}"
        tts_url = f"ws://127.0.0.1:{await nursery.start(tts.serve)}"
        for i, utt in enumerate(utts):
            print(f"streaming {i + 1}/{len(utts)} ({utt.voice})", file=sys.stderr)
            await stream(stt_url, utt)
        replies_out = [await first_audio(tts_url, reply, wps) for reply in replies]
        nursery.cancel_scope.cancel()
    return replies_out


def pct(values: list[float]) -> str:
    if not values:
        return "-"
    p50, p90 = np.percentile(values, [50, 90])
    return f"{p50:.2f} / {p90:.2f} s (n={len(values)})"


def summarise(utts: list[Utterance], voice: str) -> dict[str, Any]:
    mine = [u for u in utts if u.voice == voice]
    aligned = [
        h.arrival - end
        for u in mine
        if u.word_ends and not errors(u.text, u.streamed) and len(u.heard) == len(u.word_ends)
        for h, end in zip(u.heard, u.word_ends, strict=True)
    ]
    return {
        "words": sum(len(normalise_words(u.text)) for u in mine),
        "errors_offline": sum(errors(u.text, u.offline) for u in mine),
        "errors_streaming": sum(errors(u.text, u.streamed) for u in mine),
        "last_word_s": [u.heard[-1].arrival - u.speech_end for u in mine if u.heard],
        "every_word_estimated_s": [h.arrival - h.stop for u in mine for h in u.heard],
        "every_word_aligned_s": aligned,
        "end_of_turn_s": [u.end_of_turn - u.speech_end for u in mine if u.end_of_turn is not None],
        "missing": sum(u.end_of_turn is None for u in mine),
        "max_send_lag_s": max(u.send_lag for u in mine),
    }


def report(result: dict[str, Any], utts: list[Utterance]) -> list[str]:
    e, p, t = result["espeak-ng"], result["Piper"], result

    def wer(r: dict[str, Any], path: str) -> str:
        return f"{r[f'errors_{path}'] / r['words']:.1%} ({r[f'errors_{path}']}/{r['words']})"

    word = f"≤ {TARGETS['word_latency_s']} s"
    rows = [
        ("STT WER, offline (whole utterance)", wer(e, "offline"), wer(p, "offline"),
         f"≤ {TARGETS['wer']:.0%} (espeak-ng)"),
        ("STT WER, streaming (LocalSttEngine)", wer(e, "streaming"), wer(p, "streaming"),
         f"≤ {TARGETS['wer']:.0%} (espeak-ng)"),
        ("end of speech → last Word", pct(e["last_word_s"]), pct(p["last_word_s"]), word),
        ("every word, end = EndWord.stop_time (estimate) → Word",
         pct(e["every_word_estimated_s"]), pct(p["every_word_estimated_s"]), word),
        ("every word, end from Piper's alignment → Word (exact transcripts)", "-",
         pct(p["every_word_aligned_s"]), word),
        ("end of speech → Step with prs[2] > 0.6", pct(e["end_of_turn_s"]),
         pct(p["end_of_turn_s"]), f"(design: ≥ {END_OF_TURN_FLOOR_S:.2f} s after the VAD's end)"),
    ]  # fmt: skip
    lines = ["| STT (p50 / p90) | espeak-ng voice | Piper voice | target |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    lines += [
        "", "| speed (one core) | value | target |", "|---|---|---|",
        f"| STT RTF, offline decodes, CPU / wall | {t['stt_rtf_offline']} | - |",
        f"| STT streaming: decode time / utterance audio, CPU / wall ({t['stt_decodes']} "
        f"decodes) | {t['stt_rtf_streaming']} | - |",
        f"| TTS (Piper) RTF, CPU / wall | {t['tts_rtf']} | - |",
        f"| TTS first word sent → first Audio, p50 / p90 ({t['llm_words_per_s']:g} words/s) "
        f"| {pct(t['tts_first_audio_s'])} | ≤ {TARGETS['tts_first_audio_s']} s |",
    ]  # fmt: skip
    for voice in ("espeak-ng", "Piper"):
        lines.append(f"\nworst sentences, {voice} voice (word errors offline / streaming):")
        scored = [(errors(u.text, u.offline), errors(u.text, u.streamed), u) for u in utts]
        scored = [s for s in scored if s[2].voice == voice and s[0] + s[1]]
        for off, on, u in sorted(scored, key=lambda s: -s[0] - s[1])[:5]:
            lines.append(f"  {off} / {on}  {u.text}\n      offline:   {u.offline}")
            lines.append(f"      streaming: {u.streamed}")
    lines.append("\nTTS replies: first audio (s), words in the first chunk, reply")
    for reply, first in zip(REPLIES, t["tts_first_audio_s"], strict=False):
        chunk = next((i + 1 for i, w in enumerate(reply.split()) if w.endswith(CLAUSE_END)), 0)
        lines.append(f"  {first:.2f}  {chunk:2}  {reply}")
    m, load = t["machine"], [" ".join(f"{x:.2f}" for x in t[f"load_{w}"]) for w in ("start", "end")]
    lag, missing = max(e["max_send_lag_s"], p["max_send_lag_s"]), e["missing"] + p["missing"]
    return [
        *lines,
        f"\nCPU affinity {t['cpu_affinity']} of {m['cpus']} CPUs ({m['cpu_model']}); load average "
        f"{load[0]} at start, {load[1]} at end; sender's worst lag behind real time {lag:.3f} s; "
        f"streams with no end of turn: {missing}",
        "targets: STT WER ≤ 12% on espeak-ng speech, words out ≤ 1.0 s after they are spoken, "
        "TTS first audio ≤ 0.5 s",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 sentences and 4 replies")
    parser.add_argument("--llm-words-per-second", type=float, default=30.0)
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    affinity = sorted(os.sched_getaffinity(0))
    result: dict[str, Any] = {"machine": machine(), "cpu_affinity": affinity}
    result["load_start"] = os.getloadavg()
    if len(affinity) > 1:
        print("not pinned: run under `taskset -c 1` for one-core figures", file=sys.stderr)
    sentences, replies = (SENTENCES[:4], REPLIES[:4]) if args.quick else (SENTENCES, REPLIES)
    recognizer, vad, synth = MoonshineRecognizer(), SileroVadModel(), PiperSynthesizer()
    recognizer.transcribe(np.zeros(16_000, dtype=np.float32) + 0.01)  # warm-up
    tts_cost, stt_cost = Cost(), Cost()
    utts = utterances(sentences, synth, tts_cost)
    for utt in utts:
        speech = resample(utt.pcm[round(LEAD_S * RATE) :], RATE, 16_000)
        with stt_cost.timing(len(speech) / 16_000):
            utt.offline = recognizer.transcribe(speech)
    timed = TimedRecognizer(recognizer)
    stt = LocalSttEngine(LocalSttConfig(), recognizer=cast(MoonshineRecognizer, timed), vad=vad)
    tts = LocalTtsEngine(LocalTtsConfig(), synthesizer=synth)
    wps = args.llm_words_per_second
    firsts = trio.run(online, utts, replies, stt, tts, wps)
    for voice in ("espeak-ng", "Piper"):
        result[voice] = summarise(utts, voice)
    result |= {
        "stt_rtf_offline": stt_cost.rtf(),
        "stt_rtf_streaming": timed.cost.rtf(stt_cost.audio),  # per second of utterance
        "stt_decodes": timed.cost.calls,
        "tts_rtf": tts_cost.rtf(),
        "llm_words_per_s": wps,
        "tts_first_audio_s": [f for f, _ in firsts],
        "tts_reply_audio_s": [a for _, a in firsts],
        "load_end": os.getloadavg(),
    }
    print("\n".join(report(result, utts)))
    if args.json is not None:
        details = [{"streaming": u.streamed} | vars(u) | {"pcm": None} for u in utts]
        args.json.write_text(json.dumps(result | {"utterances": details}, indent=1, default=vars))
    return 0


if __name__ == "__main__":
    sys.exit(main())
