"""The whole local stack, end to end: voice-to-voice latency, barge-in, start-up time, memory.

    .venv/bin/python bench/local_stack.py [--questions 12] [--barge-ins 5] [--llm-threads N]
                                          [--llm-batch-threads N] [--json out.json]

It starts ``unmute-trio up`` (Moonshine + Silero VAD, Piper, llama.cpp, the server) on free
ports without ``KYUTAI_*_URL``, talks to it with ``VoiceClient`` (the browser protocol, Ogg/Opus
paced in real time, silence between utterances like an open mic), stops it with SIGINT and
checks it exits 0. What exactly is timed, and the results: docs/local-stack-bench.md.

- **Start-up**: launching ``up`` → its "Open http://" line; the first session → its greeting.
- **Voice-to-voice**: one ``smalltalk`` session, espeak-ng questions once each reply is over;
  end of speech (energy) → the reply's first ``response.audio.delta``, with the steps between.
- **Barge-in**: requests spoken over the replies of a fresh session; first voiced sample sent →
  ``unmute.interrupted_by_vad`` ("word" when a transcribed word came first).
- **RSS**: VmRSS and VmHWM of the launcher and its children after the questions.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trio

from unmute_trio.loadtest.procfs import machine
from unmute_trio.testing.voice_client import PAGE_SAMPLES, VoiceClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' speech helpers
from tests.local_engines import espeak

TARGETS = {"voice_to_voice_median_s": 2.0, "barge_in_median_s": 0.5, "warm_start_s": 20.0}
QUESTIONS = [
    "What is the capital of France?",
    "How far away is the moon?",
    "What should I cook for dinner tonight?",
    "Can you recommend a good book to read?",
    "Why is the sky blue?",
    "What is your favorite kind of music?",
    "How do I make a good cup of tea?",
    "What is a fun thing to do on a rainy day?",
    "Do you think cats are smarter than dogs?",
    "How many legs does a spider have?",
    "What is the tallest mountain in the world?",
    "Tell me something interesting about octopuses.",
]
# Spoken over the reply to the one before. (Asked for stories, the model mostly refuses.)
LONG_REQUESTS = [
    "Explain in detail how a car engine works.",
    "Actually, explain in detail how airplanes fly instead.",
    "No wait, explain in detail how the internet works.",
    "Hmm, explain in detail how a refrigerator keeps food cold.",
    "Actually, explain in detail how vaccines work.",
    "Explain in detail how bees make honey instead.",
]
READY_LINE = "Open http://"
START_TIMEOUT_S, STOP_TIMEOUT_S, TURN_TIMEOUT_S = 300.0, 60.0, 90.0
AFTER_REPLY_S = 1.0  # bot audio is sent 320 ms ahead of playback: let it finish playing
BARGE_AFTER_S = 1.0  # into a reply, from its first audio
LLM_WORD = "unmute.response.text.delta.ready"
CLAUSE_END, MAX_CHUNK_WORDS = (".", ",", "!", "?", ";", ":"), 20  # the local TTS's chunks
SILENCE_PAGE = np.zeros(PAGE_SAMPLES, dtype=np.float32)


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ the stack under test


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids = [int(k) for k in children.read_text().split()]
        except OSError:
            continue
        for kid in kids:
            found += [kid, *descendants(kid)]
    return found


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().split("\0")[:-1]
    except OSError:
        return []


def mib(status: str, key: str) -> float:
    return int(re.search(rf"{key}:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def role(argv: list[str]) -> str:
    if argv and argv[0].endswith("llama-server"):
        return "llama-server"
    for name, label in (("engines", "engines (STT+TTS)"), ("serve", "server"), ("up", "launcher")):
        if name in argv:
            return label
    return " ".join(argv)[:40]


def _stop_when_we_die() -> None:
    """In the child: SIGINT (an orderly stop) when this script dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG


@dataclass
class Stack:
    """``unmute-trio up`` as a subprocess; its output goes to ``log`` (and is scanned)."""

    args: list[str]
    log: Path
    process: subprocess.Popen[str] | None = None
    started_at: float = 0.0
    ready_at: float | None = None
    timeline: list[tuple[float, str]] = field(default_factory=list)  # the launcher's own lines
    children: dict[int, list[str]] = field(default_factory=dict)  # pid -> argv, once ready
    _ready: threading.Event = field(default_factory=threading.Event)

    def start(self) -> float:
        env = {k: v for k, v in os.environ.items() if not re.fullmatch(r"KYUTAI_\w+_URL", k)}
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "unmute_trio", "up", *self.args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # our own Ctrl-C must not reach it twice: stop() signals it
            preexec_fn=_stop_when_we_die,
        )
        threading.Thread(target=self._read, daemon=True).start()
        deadline = self.started_at + START_TIMEOUT_S
        while not self._ready.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"unmute-trio up did not become ready (see {self.log})")
        assert self.ready_at is not None
        self.children = {pid: cmdline(pid) for pid in descendants(self.process.pid)}
        return self.ready_at - self.started_at

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with self.log.open("w") as out:
            for line in self.process.stdout:
                at = time.monotonic() - self.started_at
                out.write(f"{at:7.2f} {line}")
                out.flush()
                if line.strip() and not line.startswith("[") and self.ready_at is None:
                    self.timeline.append((round(at, 2), line.strip()))
                if READY_LINE in line and self.ready_at is None:
                    self.ready_at = time.monotonic()
                    self._ready.set()

    def memory(self) -> list[dict[str, Any]]:
        assert self.process is not None
        rows = []
        for pid in [self.process.pid, *descendants(self.process.pid)]:
            status = Path(f"/proc/{pid}/status").read_text()
            rss, peak = mib(status, "VmRSS"), mib(status, "VmHWM")
            rows.append(
                {"process": role(cmdline(pid)), "pid": pid, "rss_mib": rss, "peak_mib": peak}
            )
        return rows

    def stop(self) -> dict[str, Any]:
        """SIGINT; the exit code and the stop time. Kills whatever is left (ours only)."""
        result: dict[str, Any] = {"exit_code": None, "stop_s": None, "leftovers": []}
        if self.process is None:
            return result
        self.children.update({p: cmdline(p) for p in descendants(self.process.pid)})
        begun = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            result["exit_code"] = self.process.wait(timeout=STOP_TIMEOUT_S)
            result["stop_s"] = time.monotonic() - begun
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pid, argv in self.children.items():
            if argv and cmdline(pid) == argv:  # still alive, and still the same program
                result["leftovers"].append(role(argv))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return result


# ------------------------------------------------------------------ the microphone


@dataclass(eq=False)
class Utterance:
    pages: list[np.ndarray]
    first_voiced: int  # page indices
    last_voiced: int
    started_at: float | None = None  # send times (trio clock) of those pages
    ended_at: float | None = None
    events_at_end: int = 0  # how many events the client had then
    started: trio.Event = field(default_factory=trio.Event)
    ended: trio.Event = field(default_factory=trio.Event)


def utterance(pcm: np.ndarray) -> Utterance:
    """Whole 40 ms pages; voiced = 10 ms windows within 40 dB of the loudest one."""
    pcm = np.concatenate([pcm, np.zeros(-len(pcm) % PAGE_SAMPLES, dtype=np.float32)])
    windows = pcm[: len(pcm) // 240 * 240].reshape(-1, 240)
    db = 10 * np.log10(np.mean(windows.astype(np.float64) ** 2, axis=1) + 1e-12)
    voiced = np.flatnonzero(db > db.max() - 40)
    first, last = voiced[0] * 240, voiced[-1] * 240 + 239
    pages = list(pcm.reshape(-1, PAGE_SAMPLES))
    return Utterance(pages, first // PAGE_SAMPLES, last // PAGE_SAMPLES)


class Mic:
    """Streams one page every 40 ms forever: silence, or the pages of the current utterance."""

    def __init__(self, client: VoiceClient) -> None:
        self.client = client
        self.current: Utterance | None = None
        self.index = 0

    def say(self, pcm: np.ndarray) -> Utterance:
        assert self.current is None, "one utterance at a time"
        self.current, self.index = utterance(pcm), 0
        return self.current

    async def run(self) -> None:
        while True:
            u = self.current
            if u is None:
                await self.client.stream(SILENCE_PAGE)
                continue
            await self.client.stream(u.pages[self.index])
            now = trio.current_time()
            if self.index == u.first_voiced:
                u.started_at = now
                u.started.set()
            if self.index == u.last_voiced:
                u.ended_at, u.events_at_end = now, len(self.client.events)
                u.ended.set()
            self.index += 1
            if self.index == len(u.pages):
                self.current = None


# ------------------------------------------------------------------ measurements


def find(events: list[dict[str, Any]], kind: str, start: int, stop: int, last: bool = False) -> int:
    hits = [i for i in range(start, stop) if events[i].get("type") == kind]
    return (hits[-1] if last else hits[0]) if hits else -1


def first_clause(events: list[dict[str, Any]], start: int, stop: int) -> int:
    """The LLM word that completes the TTS's first chunk: a clause end, or the 20th word."""
    words = [i for i in range(start, stop) if events[i].get("type") == LLM_WORD]
    ends = [i for i in words if events[i]["delta"].rstrip().endswith(CLAUSE_END)]
    return min(ends[:1] + words[MAX_CHUNK_WORDS - 1 : MAX_CHUNK_WORDS], default=-1)


async def index_of(client: VoiceClient, kinds: set[str], after: int) -> int:
    event = await client.wait_for(predicate=lambda e: e.get("type") in kinds, after=after)
    return next(i for i in range(after, len(client.events)) if client.events[i] is event)


@contextlib.asynccontextmanager
async def session(url: str) -> AsyncIterator[tuple[VoiceClient, Mic, tuple[float, float]]]:
    """A ``smalltalk`` session with an open mic, once its greeting has been played; also when
    (``time.monotonic``) the session was configured and the greeting's first audio came."""
    async with VoiceClient.connect(url) as client, trio.open_nursery() as nursery:
        mic = Mic(client)
        nursery.start_soon(mic.run)
        configured = time.monotonic()
        await client.update_session({"type": "smalltalk", "language": "en"})
        with trio.fail_after(TURN_TIMEOUT_S):
            await client.wait_for("response.audio.delta")
            greeting = (configured, time.monotonic())
            await client.wait_for("response.audio.done")
        await trio.sleep(AFTER_REPLY_S)
        yield client, mic, greeting
        nursery.cancel_scope.cancel()


async def ask(client: VoiceClient, mic: Mic, question: str, pcm: np.ndarray) -> dict[str, Any]:
    at = len(client.events)
    u = mic.say(pcm)
    turn: dict[str, Any] = {"question": question, "load": load()}
    with trio.move_on_after(TURN_TIMEOUT_S) as timeout:
        done = await index_of(client, {"response.audio.done"}, at)
    await u.ended.wait()
    if timeout.cancelled_caught:
        return {**turn, "error": f"no complete reply within {TURN_TIMEOUT_S:.0f} s"}
    ev, t = client.events, client.received_at
    created = find(ev, "response.created", at, done, last=True)
    stopped = find(ev, "input_audio_buffer.speech_stopped", at, created, last=True)
    marks = {
        "pause_detected": stopped,
        "reply_started": created,
        "llm_first_word": find(ev, LLM_WORD, created, done),
        "llm_first_clause": first_clause(ev, created, done),
        "first_audio": find(ev, "response.audio.delta", created, done),
    }
    assert u.ended_at is not None
    for name, i in marks.items():
        turn[f"{name}_s"] = t[i] - u.ended_at if i >= 0 else None
    words = "conversation.item.input_audio_transcription.delta"
    heard = [e["delta"].strip() for e in ev[at:created] if e.get("type") == words]
    turn["heard"] = " ".join(w for w in heard if w)
    text_done = find(ev, "response.text.done", created, done + 1)
    turn["reply"] = ev[text_done]["text"] if text_done >= 0 else ""
    turn["interrupted"] = find(ev, "unmute.interrupted_by_vad", at, done) >= 0
    await trio.sleep(AFTER_REPLY_S)
    return turn


async def questions(url: str, stack: Stack, n: int) -> tuple[list[Any], list[Any], Any]:
    clips = [(q, espeak(q)) for q in (QUESTIONS * n)[:n]]
    turns: list[dict[str, Any]] = []
    async with session(url) as (client, mic, greeting):
        for i, (question, pcm) in enumerate(clips, 1):
            turns.append(await ask(client, mic, question, pcm))
            v2v = turns[-1].get("first_audio_s")
            print(f"  question {i}/{n}: voice-to-voice {fmt(v2v)} s", file=sys.stderr)
        memory = stack.memory()
    return turns, memory, greeting


async def barge_ins(url: str, wanted: int) -> list[dict[str, Any]]:
    clips = [espeak(s) for s in LONG_REQUESTS]
    tries: list[dict[str, Any]] = []
    async with session(url) as (client, mic, _):
        u = mic.say(clips[0])
        for attempt in range(1, wanted + 4):
            with trio.fail_after(TURN_TIMEOUT_S):
                await u.ended.wait()
                created = await index_of(client, {"response.created"}, u.events_at_end)
                await index_of(client, {"response.audio.delta"}, created)
            await trio.sleep(BARGE_AFTER_S)
            mark, i = len(client.events), attempt % len(LONG_REQUESTS)
            u = mic.say(clips[i])
            so_far = [e["delta"] for e in client.events[created:mark] if e["type"] == LLM_WORD]
            result: dict[str, Any] = {"said": LONG_REQUESTS[i], "over": "".join(so_far)}
            result["load"] = load()
            kinds, hit = {"unmute.interrupted_by_vad", "response.audio.done"}, -1
            with trio.move_on_after(TURN_TIMEOUT_S):
                hit = await index_of(client, kinds, created)  # the reply's end, if it came first
                await u.started.wait()
            ev = client.events
            if hit < 0 or ev[hit]["type"] == "response.audio.done":
                tries.append({**result, "error": "the reply ended before it was interrupted"})
                continue
            assert u.started_at is not None
            heard = [e for e in ev[mark:hit] if e.get("type", "").endswith("transcription.delta")]
            by_word = any(e["delta"].strip() for e in heard)
            result.update(latency_s=client.received_at[hit] - u.started_at)
            tries.append({**result, "by": "word" if by_word else "vad"})
            print(f"  barge-in {attempt}: {fmt(result['latency_s'])} s", file=sys.stderr)
            if sum("latency_s" in r for r in tries) >= wanted:
                break
    return tries


# ------------------------------------------------------------------ output


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def stats(values: list[float | None]) -> dict[str, float | None]:
    got = [v for v in values if v is not None]
    median, p90 = (float(np.percentile(got, q)) for q in (50, 90)) if got else (None, None)
    return {"median": median, "p90": p90, "n": len(got)}


def met(value: float | None, limit: float) -> str:
    return f"≤ {limit:g} s {'✓' if value is not None and value <= limit else '✗'}"


def report(r: dict[str, Any]) -> str:
    lines = ["| measure | result | target | load avg 1/5/15 min |", "|---|---|---|---|"]
    row = lines.append
    start, steps, b = r["warm_start_s"], r["steps"], r["barge_in"]
    row(
        f"| warm start (launch → 'Open http://') | {start:.1f} s "
        f"| {met(start, TARGETS['warm_start_s'])} | {r['load_start']} |"
    )
    row(
        f"| first session (configured {r['first_session_after_ready_s']:.1f} s after 'Open') "
        f"→ greeting's first audio | {r['first_greeting_audio_s']:.1f} s | | |"
    )
    for name, label in (
        ("first_audio_s", "**voice-to-voice** (end of speech → first audio)"),
        ("pause_detected_s", "… end of speech → speech_stopped"),
        ("reply_started_s", "… end of speech → response.created"),
        ("llm_first_word_s", "… end of speech → LLM's first word"),
        ("llm_first_clause_s", "… end of speech → LLM's first clause (first TTS chunk)"),
    ):
        s = steps[name]
        main = name == "first_audio_s"
        target = f"median {met(s['median'], TARGETS['voice_to_voice_median_s'])}" if main else ""
        row(
            f"| {label}, median / p90 (n={s['n']}) | {fmt(s['median'])} / {fmt(s['p90'])} s "
            f"| {target} | {r['load_questions'] if main else ''} |"
        )
    kinds = [x.get("by") for x in r["barge_in_tries"]]
    row(
        f"| **barge-in** (first voiced sample → interrupted_by_vad), median / p90 (n={b['n']}: "
        f"{kinds.count('vad')} by VAD, {kinds.count('word')} by a word) "
        f"| {fmt(b['median'])} / {fmt(b['p90'])} s "
        f"| median {met(b['median'], TARGETS['barge_in_median_s'])} | {r['load_barge_in']} |"
    )
    for m in r["memory"]:
        rss = f"{m['rss_mib']:.0f} MiB (peak {m['peak_mib']:.0f})"
        row(f"| RSS {m['process']} (pid {m['pid']}) | {rss} | | {r['load_questions']} |")
    row(f"| RSS total | {sum(m['rss_mib'] for m in r['memory']):.0f} MiB | | |")
    stop = r["stop"]
    row(f"| stop (SIGINT → exit) | exit {stop['exit_code']} in {fmt(stop['stop_s'], 1)} s | 0 | |")
    row("\nstart-up (s since launch): " + "; ".join(f"{t:.1f} {x}" for t, x in r["startup"]))
    row("\n| # | v2v | pause | reply | LLM word | clause (s) | load | question → heard → reply |")
    row("|---|---|---|---|---|---|---|---|")
    for i, q in enumerate(r["turns"], 1):
        if "error" in q:
            row(f"| {i} | - | - | - | - | - | {q['load']} | {q['question']}: {q['error']} |")
            continue
        flag = " (interrupted reply)" if q["interrupted"] else ""
        row(
            f"| {i} | {fmt(q['first_audio_s'])} | {fmt(q['pause_detected_s'])} "
            f"| {fmt(q['reply_started_s'])} | {fmt(q['llm_first_word_s'])} "
            f"| {fmt(q['llm_first_clause_s'])} | {q['load']} "
            f"| {q['question']} → “{q['heard']}”{flag} → “{q['reply']}” |"
        )
    row("")
    for i, x in enumerate(r["barge_in_tries"], 1):
        got = f"{fmt(x['latency_s'])} s by {x['by']}" if "by" in x else x["error"]
        row(f"barge-in {i}: “{x['said']}” over “{x['over']}” → {got} (load {x['load']})")
    return "\n".join(lines)


# ------------------------------------------------------------------ main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=len(QUESTIONS), help="default 12")
    parser.add_argument("--barge-ins", type=int, default=5, help="successful tries (default 5)")
    parser.add_argument("--llm-threads", type=int, help="passed to up (default: up's, cores - 1)")
    parser.add_argument(
        "--llm-batch-threads", type=int, help="passed to up (default: up's, all cores)"
    )
    parser.add_argument("--json", type=Path, help="write every figure here")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    ports = {name: free_port() for name in ("port", "stt-port", "tts-port", "llm-port")}
    up_args = ["--host", "127.0.0.1"]
    for name, port in ports.items():
        up_args += [f"--{name}", str(port)]
    if args.llm_threads is not None:
        up_args += ["--llm-threads", str(args.llm_threads)]
    if args.llm_batch_threads is not None:
        up_args += ["--llm-batch-threads", str(args.llm_batch_threads)]
    log = Path(tempfile.mkdtemp(prefix="unmute-local-stack-")) / "up.log"
    print(f"unmute-trio up {' '.join(up_args)}; its output: {log}", file=sys.stderr)
    r: dict[str, Any] = {"machine": machine(), "up_args": up_args, "load_before": load()}
    stack = Stack(up_args, log)
    try:
        r["warm_start_s"] = stack.start()
        r["load_start"], r["startup"] = load(), stack.timeline
        print(f"ready in {r['warm_start_s']:.1f} s (load {r['load_start']})", file=sys.stderr)
        url = f"ws://127.0.0.1:{ports['port']}/v1/realtime"
        r["turns"], r["memory"], greeting = trio.run(questions, url, stack, args.questions)
        assert stack.ready_at is not None
        r["first_session_after_ready_s"] = greeting[0] - stack.ready_at
        r["first_greeting_audio_s"] = greeting[1] - greeting[0]
        r["load_questions"] = load()
        r["barge_in_tries"] = trio.run(barge_ins, url, args.barge_ins)
        r["load_barge_in"] = load()
    finally:
        r["stop"] = stack.stop()
    names = ("pause_detected", "reply_started", "llm_first_word", "llm_first_clause", "first_audio")
    r["steps"] = {f"{n}_s": stats([t.get(f"{n}_s") for t in r["turns"]]) for n in names}
    r["barge_in"] = stats([x.get("latency_s") for x in r["barge_in_tries"]])
    m = r["machine"]
    print(f"machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['ram_gib']} GiB RAM")
    print(f"up {' '.join(up_args)}; load before start {r['load_before']}\n")
    print(report(r))
    if args.json is not None:
        args.json.write_text(json.dumps(r, indent=1, ensure_ascii=False))
    stop = r["stop"]
    return 0 if stop["exit_code"] == 0 and not stop["leftovers"] else 1


if __name__ == "__main__":
    sys.exit(main())
