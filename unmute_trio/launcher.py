"""``unmute-trio up``: the whole stack on one machine, as supervised children of one process.

For each service role (STT, TTS, LLM) the launcher decides who serves it, in this order:
1. the ``KYUTAI_*_URL`` variable, when set (a GPU moshi-server, a remote LLM...);
2. a service already answering at the role's default address (``unmute-trio sim`` or
   ``unmute-trio engines`` in another terminal, an Ollama on 8091...);
3. a local engine started here: ``unmute-trio engines`` for STT/TTS (Moonshine, Piper) and
   llama.cpp's ``llama-server`` for the LLM (built and cached by ``scripts/local-llm.sh``).

Then it starts ``unmute-trio serve`` pointed at those services and prints where to talk.

Children live in one trio nursery. Each runs in its own session, so a Ctrl-C in the terminal
reaches only the launcher, which stops them in order; and each gets SIGTERM from the kernel if
the launcher dies without stopping them (killed outright), so nothing outlives it.
Ctrl-C or SIGTERM: the server first (it drains its sessions), then the engines; exit 0. A child
that exits on its own takes the whole stack down with one line saying which and why (its
output's tail is printed); exit 1. Restarting it silently would hide a broken install.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from unmute_trio.exception_groups import first_leaf
from unmute_trio.settings import ws_to_http
from unmute_trio.supervisor import Child, ChildFailed

REPO_ROOT = Path(__file__).resolve().parent.parent

log = logging.getLogger("unmute_trio.launcher")

LLM_SCRIPT = REPO_ROOT / "scripts" / "local-llm.sh"
READY_TIMEOUT_S = 180.0  # model loading on a slow, busy machine
# Default reply limit of the local LLM (-n), for replies that set no max_tokens.
LLM_MAX_REPLY_TOKENS = 512
# The LLM yields the CPU to the speech engines and the server (docs/local-engines.md).
LLM_NICENESS = 5


@dataclass(frozen=True)
class Role:
    name: str
    env: str
    scheme: str
    probe_path: str
    engine: str  # what serves it when started here

    def url(self, port: int) -> str:
        return f"{self.scheme}://localhost:{port}"

    def probe_url(self, url: str) -> str:
        return ws_to_http(url).rstrip("/") + self.probe_path


ROLES = (
    Role("stt", "KYUTAI_STT_URL", "ws", "/api/build_info", "local Moonshine base-en + Silero VAD"),
    Role("tts", "KYUTAI_TTS_URL", "ws", "/api/build_info", "local Piper (en_US joe)"),
    Role("llm", "KYUTAI_LLM_URL", "http", "/v1/models", "local llama.cpp"),
)


@dataclass
class Choice:
    url: str
    source: str  # "configured", "already running", "local"


async def answers(url: str, timeout_s: float = 1.0) -> bool:
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(url)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


async def choose_services(env: dict[str, str], ports: dict[str, int]) -> dict[str, Choice]:
    choices: dict[str, Choice] = {}
    for role in ROLES:
        configured = env.get(role.env)
        default = role.url(ports[role.name])
        if configured:
            choices[role.name] = Choice(configured, "configured")
        elif await answers(role.probe_url(default)):
            choices[role.name] = Choice(default, "already running")
        else:
            choices[role.name] = Choice(default, "local")
    return choices


async def wait_ready(child: Child, url: str, what: str) -> None:
    """Poll ``url`` until it answers 200; progress every 5 s; fail if the child exits."""
    started = time.monotonic()
    next_note = started + 5
    while not await answers(url, timeout_s=2.0):
        if child.exited.is_set():
            raise ChildFailed(child, f"exited with code {child.returncode} before it was ready")
        elapsed = time.monotonic() - started
        if elapsed > READY_TIMEOUT_S:
            raise ChildFailed(child, f"not ready after {READY_TIMEOUT_S:.0f} s")
        if time.monotonic() >= next_note:
            print(f"  ... waiting for {what} ({elapsed:.0f} s)", flush=True)
            next_note += 5
        await trio.sleep(0.25)
    print(f"  {what} ready in {time.monotonic() - started:.1f} s", flush=True)


async def warm_llm(url: str, model: str) -> None:
    """Have the local LLM read the system prompt once, so the first session does not wait for
    it: llama-server keeps the prompt's prefix cached (the part all sessions share comes first,
    see conversation/prompts.py). Takes a few seconds on 2 cores; failures only cost that."""
    import random
    from datetime import datetime

    from unmute_trio.conversation.prompts import build_system_prompt, llm_name_from_model
    from unmute_trio.protocol.instructions import SmalltalkInstructions

    prompt = build_system_prompt(
        SmalltalkInstructions(),
        llm_name=llm_name_from_model(model),
        rng=random.Random(),
        now=datetime.now().astimezone(),
    )
    messages = [{"role": "system", "content": prompt}]
    body = {"model": model, "messages": messages, "max_tokens": 1}
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            await client.post(url.rstrip("/") + "/v1/chat/completions", json=body)
    except httpx.HTTPError as e:
        print(f"  (warming the LLM's prompt cache failed: {e!r})", flush=True)
        return
    print(f"  LLM prompt cache warmed in {time.monotonic() - started:.1f} s", flush=True)


async def _warm_then_set(url: str, model: str, warmed: trio.Event) -> None:
    try:
        await warm_llm(url, model)
    finally:
        warmed.set()


async def _say_when_warm(warmed: trio.Event) -> None:
    await warmed.wait()
    print("The LLM is ready: answers now start about 2 s after you stop talking.", flush=True)


# ---------------------------------------------------------------- the stack


def default_llm_threads() -> int:
    """cores − 1, at least 1: a core is left to the speech engines, the server and the
    browser. On 2 cores, 2 threads were ~0.3 s faster to answer on a quiet machine but
    collapsed (3.8–5.5 s voice-to-voice) whenever anything else kept a core busy, and slowed
    the start-up; 1 thread stayed steady (docs/local-stack-bench.md, docs/local-llm.md)."""
    return max(1, (os.cpu_count() or 2) - 1)


def default_llm_batch_threads() -> int:
    """All cores: reading a prompt (the new turn's tokens) is one short burst that comes right
    after the user stops talking, when the speech engines have nothing to do; generation, which
    overlaps speech synthesis for seconds, keeps ``default_llm_threads``."""
    return max(1, os.cpu_count() or 2)


def add_up_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--stt-port", type=int, default=8090, help="local STT port (default 8090)")
    parser.add_argument("--tts-port", type=int, default=8089, help="local TTS port (default 8089)")
    parser.add_argument("--llm-port", type=int, default=8091, help="local LLM port (default 8091)")
    parser.add_argument(
        "--llm-threads",
        type=int,
        default=int(os.environ.get("UNMUTE_LOCAL_LLM_THREADS", str(default_llm_threads()))),
        help="llama-server threads (default: cores - 1, at least 1; see docs/local-llm.md)",
    )
    parser.add_argument(
        "--llm-batch-threads",
        type=int,
        default=int(
            os.environ.get("UNMUTE_LOCAL_LLM_BATCH_THREADS", str(default_llm_batch_threads()))
        ),
        help="llama-server threads reading prompts (default: all cores; docs/local-llm.md)",
    )


def llm_paths() -> tuple[Path, Path]:
    """Build (or find cached) llama-server and the model; returns (binary, model)."""
    model_override = os.environ.get("UNMUTE_LOCAL_LLM_MODEL")
    print("Local LLM: checking llama-server and the model (built and fetched once, cached)")
    subprocess.run(["bash", str(LLM_SCRIPT)], check=True)
    out = subprocess.run(
        ["bash", str(LLM_SCRIPT), "--print-paths"], check=True, capture_output=True, text=True
    ).stdout
    paths = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    model = Path(model_override) if model_override else Path(paths["model"])
    if not model.is_file():
        raise FileNotFoundError(f"UNMUTE_LOCAL_LLM_MODEL={model} is not a file")
    return Path(paths["binary"]), model


def run_up_command(args: argparse.Namespace) -> int:
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the readiness polls, every 0.25 s
    try:
        try:
            return trio.run(_up, args)
        except BaseExceptionGroup as group:  # a child failed while the nursery was starting
            raise first_leaf(group) from None
    except ChildFailed as e:
        print(f"\nunmute-trio up: {e}; stopping everything.", file=sys.stderr)
        if e.child.tail:
            print(f"last lines of {e.child.label}:", file=sys.stderr)
            for line in e.child.tail:
                print(f"  {line}", file=sys.stderr)
        return 1
    except (subprocess.CalledProcessError, FileNotFoundError, KeyError) as e:
        print(f"unmute-trio up: cannot prepare the local LLM: {e}", file=sys.stderr)
        return 1


async def _up(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    ports = {"stt": args.stt_port, "tts": args.tts_port, "llm": args.llm_port}
    choices = await choose_services(env, ports)
    print("Services:")
    for role in ROLES:
        choice = choices[role.name]
        what = role.engine if choice.source == "local" else choice.source
        print(f"  {role.name.upper()}: {choice.url} ({what})")
    python = sys.executable
    children: list[tuple[Child, str, str]] = []  # (child, readiness URL, description)
    local_speech = [r for r in ROLES[:2] if choices[r.name].source == "local"]
    if local_speech:
        command = [python, "-m", "unmute_trio", "engines", "--host", "127.0.0.1"]
        command += ["--stt-port", str(args.stt_port), "--tts-port", str(args.tts_port)]
        if len(local_speech) == 1:
            command += ["--only", local_speech[0].name]
        ready = local_speech[-1].probe_url(choices[local_speech[-1].name].url)
        children.append((Child("engines", command), ready, "local STT/TTS engines"))
    if choices["llm"].source == "local":
        binary, model = await trio.to_thread.run_sync(llm_paths)
        command = [str(binary), "-m", str(model), "-t", str(args.llm_threads), "-np", "1"]
        command += ["-tb", str(args.llm_batch_threads)]
        command += ["-c", "4096", "--jinja", "--host", "127.0.0.1", "--port", str(args.llm_port)]
        # A reply that sets no max_tokens ends after 512 tokens: the 0.5B model can repeat
        # itself until its context is full (docs/local-llm.md).
        command += ["-n", str(LLM_MAX_REPLY_TOKENS)]
        command += ["--alias", model.stem]  # the model name /v1/models (and /v1/health) shows
        llm = Child("llm", command, niceness=LLM_NICENESS, echo=False, stop_grace_s=3.0)
        ready = ROLES[2].probe_url(choices["llm"].url)
        children.append((llm, ready, f"local LLM ({model.name})"))
    server_env = {**env, **{r.env: choices[r.name].url for r in ROLES}}
    server = Child(
        "server",
        [python, "-m", "unmute_trio", "serve", "--host", args.host, "--port", str(args.port)],
        env=server_env,
    )
    page = f"http://localhost:{args.port}"
    everyone = [c for c, _, _ in children] + [server]
    failed: Child | None = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as running:
                nursery.start_soon(_cancel_on_signal, signals, running)
                # The engines load their models while the LLM starts: on 2 cores that overlaps
                # single-threaded loading with the LLM's start instead of queueing them.
                warmed = trio.Event()

                async def ready_then_warm(child: Child, url: str, what: str) -> None:
                    # The prompt-cache warm-up starts as soon as the LLM answers, in the
                    # background: it takes seconds, overlaps the engines' loading and the
                    # server's start, and a first session meanwhile waits inside llama-server.
                    await wait_ready(child, url, what)
                    nursery.start_soon(_warm_then_set, choices["llm"].url, model.stem, warmed)

                async with trio.open_nursery() as starting:
                    for child, url, what in children:
                        print(f"Starting {what}...", flush=True)
                        await nursery.start(child.run)
                        local_llm = child.label == "llm"
                        starting.start_soon(
                            ready_then_warm if local_llm else wait_ready, child, url, what
                        )
                if choices["llm"].source != "local":
                    warmed.set()
                print("Starting the server...", flush=True)
                await nursery.start(server.run)
                await wait_ready(server, f"{page}/v1/health", "server")
                if warmed.is_set():
                    print(f"\nOpen {page} and talk. Ctrl-C stops everything.\n", flush=True)
                else:
                    print(
                        f"\nOpen {page} and talk. Ctrl-C stops everything.\n(The LLM is still"
                        " reading its instructions: the first answer can take several seconds"
                        " more; a line says when it is done.)\n",
                        flush=True,
                    )
                    nursery.start_soon(_say_when_warm, warmed)
                failed = await _first_exit(everyone)
            # Stopping in order: the server drains its sessions, then the engines go.
            server.scope.cancel()
            await server.exited.wait()
            for child in everyone:
                child.scope.cancel()
            nursery.cancel_scope.cancel()
    if failed is not None:
        raise ChildFailed(failed, f"exited with code {failed.returncode}")
    print("Stopped.")
    return 0


async def _cancel_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for signum in signals:
        print(f"\n{signal.Signals(signum).name} received: stopping", flush=True)
        scope.cancel()
        return


async def _first_exit(children: list[Child]) -> Child:
    """The first child to exit (the stack cannot go on without it)."""
    dead: list[Child] = []
    async with trio.open_nursery() as nursery:

        async def watch(child: Child) -> None:
            await child.exited.wait()
            dead.append(child)
            nursery.cancel_scope.cancel()

        for child in children:
            nursery.start_soon(watch, child)
    return dead[0]
