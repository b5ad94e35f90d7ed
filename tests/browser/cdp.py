"""A small driver for headless Chromium over the Chrome DevTools Protocol (CDP).

Pure Python on what the project already has (trio, trio-websocket): Chromium is started with
``--remote-debugging-port=0`` and a fresh profile, announces its DevTools port in the profile's
``DevToolsActivePort`` file, and one WebSocket carries commands to a page attached with a flat
session. Enough for end-to-end tests: navigate, evaluate JavaScript, click like a user (real
mouse events, so the click counts as a user gesture for audio autoplay), take a screenshot, and
keep the page's console for failure messages.

Usage::

    async with launch_chromium(profile_dir, extra_args=[...]) as browser:
        await browser.navigate(url)
        await browser.wait_for("document.title !== ''", timeout_s=10, what="a title")
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

DEFAULT_CHROMIUM = "/usr/bin/chromium"
# The flags this machine kind needs (no sandbox as root, no GPU, and no background traffic to
# Google's hosts, which a closed network refuses), plus a deterministic window size.
BASE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1200,900",
)
# Screenshots of a 1200x900 page are a few hundred KB of base64; a generous bound on what one
# DevTools message may make us buffer.
MAX_CDP_MESSAGE_BYTES = 64 * 1024 * 1024
# Console lines kept for failure messages; older lines are dropped (a chatty page cannot grow
# the test's memory without limit).
MAX_CONSOLE_LINES = 2000


class BrowserError(Exception):
    """Chromium failed to start, a DevTools command failed, or a wait timed out."""


def chromium_path() -> str | None:
    """The Chromium binary to use (``UNMUTE_CHROMIUM`` or Debian's), or None if absent."""
    configured = os.environ.get("UNMUTE_CHROMIUM")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    if os.access(DEFAULT_CHROMIUM, os.X_OK):
        return DEFAULT_CHROMIUM
    return shutil.which("chromium")


class Page:
    """One page of a running Chromium, driven through a flat CDP session."""

    def __init__(self, ws: WebSocketConnection, session_id: str) -> None:
        self._ws = ws
        self._session_id = session_id
        self._ids = itertools.count(1)
        # Replies are matched to callers by id; each caller waits on its own Event, and there
        # is at most one entry per command in flight.
        self._waiting: dict[int, trio.Event] = {}
        self._replies: dict[int, dict[str, Any]] = {}
        self.console: list[str] = []

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run one CDP command on the page and return its result."""
        call_id = next(self._ids)
        done = trio.Event()
        self._waiting[call_id] = done
        message = {"id": call_id, "method": method, "params": params or {}}
        message["sessionId"] = self._session_id
        try:
            await self._ws.send_message(json.dumps(message))
            await done.wait()
        finally:
            self._waiting.pop(call_id, None)
        reply = self._replies.pop(call_id, None)
        if reply is None:
            raise BrowserError(f"{method}: the connection to Chromium closed")
        if "error" in reply:
            raise BrowserError(f"{method} failed: {reply['error']}")
        return reply.get("result", {})

    async def read_messages(self) -> None:
        """Dispatch replies and record console output until the connection closes."""
        try:
            while True:
                message = json.loads(await self._ws.get_message())
                call_id = message.get("id")
                if call_id is not None and call_id in self._waiting:
                    self._replies[call_id] = message
                    self._waiting[call_id].set()
                elif message.get("sessionId") == self._session_id:
                    self._record_event(message.get("method", ""), message.get("params", {}))
        except ConnectionClosed:
            for done in self._waiting.values():
                done.set()  # their callers find no reply and fail below

    def _record_event(self, method: str, params: dict[str, Any]) -> None:
        line: str | None = None
        if method == "Runtime.consoleAPICalled":
            parts = [_remote_object_text(arg) for arg in params.get("args", [])]
            line = f"console.{params.get('type')}: {' '.join(parts)}"
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exception = details.get("exception", {})
            line = f"uncaught: {exception.get('description') or details.get('text')}"
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            line = f"log.{entry.get('level')}: {entry.get('text')} {entry.get('url', '')}".strip()
        if line is not None:
            self.console.append(line)
            del self.console[:-MAX_CONSOLE_LINES]

    # ---------------------------------------------------------------- conveniences

    async def navigate(self, url: str, *, timeout_s: float = 15) -> None:
        """Open ``url`` and wait until its document has loaded."""
        result = await self.send("Page.navigate", {"url": url})
        if "errorText" in result:
            raise BrowserError(f"cannot open {url}: {result['errorText']}")
        await self.wait_for(
            f"location.href === {json.dumps(url)} && document.readyState === 'complete'",
            timeout_s=timeout_s,
            what=f"{url} to load",
        )

    async def evaluate(self, expression: str) -> Any:
        """Evaluate JavaScript (promises are awaited) and return its JSON value."""
        result = await self.send(
            "Runtime.evaluate",
            # userGesture: as if the user had clicked, so audio may start (autoplay policy).
            {
                "expression": expression,
                "awaitPromise": True,
                "returnByValue": True,
                "userGesture": True,
            },
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JavaScript failed: {text}\n  in: {expression}")
        return result.get("result", {}).get("value")

    async def wait_for(
        self, expression: str, *, timeout_s: float, what: str, diagnostics: str | None = None
    ) -> Any:
        """Poll ``expression`` every 100 ms until it is truthy; return its value.

        On timeout, :class:`BrowserError` names ``what`` and carries the console and the value
        of the ``diagnostics`` expression (the page's state, say).
        """
        with trio.move_on_after(timeout_s):
            while True:
                value = await self.evaluate(expression)
                if value:
                    return value
                await trio.sleep(0.1)
        state = ""
        if diagnostics is not None:
            state = f"page state: {json.dumps(await self.evaluate(diagnostics), indent=1)}\n"
        raise BrowserError(
            f"timed out after {timeout_s} s waiting for {what}\n{state}{self.console_dump()}"
        )

    async def click(self, selector: str) -> None:
        """Click the centre of the element with real mouse events (a user gesture)."""
        box = await self.evaluate(
            f"""(() => {{
                const el = document.querySelector({json.dumps(selector)});
                if (!el) return null;
                el.scrollIntoView({{block: 'center'}});
                const r = el.getBoundingClientRect();
                const x = r.left + r.width / 2, y = r.top + r.height / 2;
                return {{x, y, disabled: !!el.disabled}};
            }})()"""
        )
        if box is None:
            raise BrowserError(f"no element matches {selector!r}\n{self.console_dump()}")
        if box["disabled"]:
            raise BrowserError(f"{selector!r} is disabled\n{self.console_dump()}")
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1},
            )

    async def screenshot(self, path: Path) -> None:
        """A PNG of the whole page, beyond the window's height if it is taller."""
        metrics = await self.send("Page.getLayoutMetrics")
        size = metrics["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        result = await self.send(
            "Page.captureScreenshot",
            {"format": "png", "clip": clip, "captureBeyondViewport": True},
        )
        await trio.Path(path.parent).mkdir(parents=True, exist_ok=True)
        await trio.Path(path).write_bytes(base64.b64decode(result["data"]))

    def console_dump(self) -> str:
        lines = self.console[-200:]
        return f"page console (last {len(lines)} lines):\n  " + "\n  ".join(lines)


def _remote_object_text(obj: dict[str, Any]) -> str:
    if "value" in obj:
        value = obj["value"]
        return value if isinstance(value, str) else json.dumps(value)
    return str(obj.get("description") or obj.get("type"))


async def _read_devtools_port(profile: Path, process: trio.Process, timeout_s: float) -> str:
    """Wait for Chromium to write ``DevToolsActivePort``: its port, then the browser path."""
    port_file = trio.Path(profile / "DevToolsActivePort")
    with trio.move_on_after(timeout_s):
        while True:
            if process.returncode is not None:
                raise BrowserError(f"Chromium exited at start with code {process.returncode}")
            if await port_file.exists():
                lines = (await port_file.read_text()).split()
                if len(lines) >= 2:
                    return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            await trio.sleep(0.05)
    raise BrowserError(f"Chromium did not open its DevTools port within {timeout_s} s")


@asynccontextmanager
async def launch_chromium(
    profile: Path,
    *,
    extra_args: list[str] | tuple[str, ...] = (),
    stderr_path: Path | None = None,
    start_timeout_s: float = 20.0,
) -> AsyncIterator[Page]:
    """Start Chromium with the empty profile directory ``profile``, attach to its page, and
    stop Chromium (terminate, then kill) when the block exits."""
    binary = chromium_path()
    if binary is None:
        raise BrowserError("Chromium is not installed (scripts/test-deps.sh installs it)")
    await trio.Path(profile).mkdir(parents=True, exist_ok=True)
    args = [
        binary,
        *BASE_FLAGS,
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        *extra_args,
        "about:blank",
    ]
    stderr_file = functools.partial(open, stderr_path or os.devnull, "wb")
    with await trio.to_thread.run_sync(stderr_file) as stderr:
        process = await trio.lowlevel.open_process(
            args, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
        )
    try:
        url = await _read_devtools_port(profile, process, start_timeout_s)
        async with open_websocket_url(url, max_message_size=MAX_CDP_MESSAGE_BYTES) as ws:
            page = await _attach_first_page(ws)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(page.read_messages)
                for domain in ("Page", "Runtime", "Log"):
                    await page.send(f"{domain}.enable")
                yield page
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await _stop(process)


async def _attach_first_page(ws: WebSocketConnection) -> Page:
    """Attach to the page Chromium opened, with the browser-level session (no id)."""
    ids = itertools.count(1)

    async def browser_call(method: str, params: dict[str, Any]) -> dict[str, Any]:
        call_id = next(ids)
        await ws.send_message(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:  # no events are subscribed yet at browser level; skip any stray ones
            reply = json.loads(await ws.get_message())
            if reply.get("id") == call_id:
                if "error" in reply:
                    raise BrowserError(f"{method} failed: {reply['error']}")
                return reply["result"]

    with trio.fail_after(10):
        targets = (await browser_call("Target.getTargets", {}))["targetInfos"]
        pages = [t for t in targets if t["type"] == "page"]
        if not pages:
            created = await browser_call("Target.createTarget", {"url": "about:blank"})
            target_id = created["targetId"]
        else:
            target_id = pages[0]["targetId"]
        attached = await browser_call(
            "Target.attachToTarget", {"targetId": target_id, "flatten": True}
        )
    return Page(ws, attached["sessionId"])


async def _stop(process: trio.Process) -> None:
    if process.returncode is None:
        process.terminate()
        with trio.move_on_after(5):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()
