"""A headless Chromium (Debian's) driven through the DevTools protocol, and the review server
as a subprocess: enough to click, type and paint in the review app like a user does.

No browser is downloaded: ``CHROMIUM`` (or ``chromium`` on the path) is used as it is, with a
fresh profile, no sandbox (containers) and no background networking.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or \
        shutil.which("chromium-browser")


@contextmanager
def review_server(root: Path, log: Path):
    """``oncoseg serve`` on a free port; yields the address it printed (with the token)."""
    command = [sys.executable, "-m", "oncoseg", "serve", "--data", str(root), "--port", "0",
               "--device", "cpu"]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=out, text=True)
        try:
            deadline = time.monotonic() + 120
            url = None
            while url is None and time.monotonic() < deadline:
                line = process.stdout.readline()
                if not line and process.poll() is not None:
                    raise RuntimeError(f"oncoseg serve exited ({process.returncode}); see {log}")
                if line.startswith("OncoSeg review: "):
                    url = line.split(": ", 1)[1].strip()
            if url is None:
                raise RuntimeError(f"oncoseg serve printed no address in 120 s; see {log}")
            yield url
        finally:
            _stop(process)


class Page:
    """One tab: commands and their replies over the page's DevTools websocket."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse):
        self.socket = socket
        self.ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict:
        number = next(self.ids)
        await self.socket.send_json({"id": number, "method": method, "params": params})
        while True:
            message = await self.socket.receive_json()
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 60.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = await self.evaluate(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            await asyncio.sleep(0.25)
        raise TimeoutError(f"waited {timeout:.0f} s for {what or expression}")

    async def drag(self, points: list[tuple[float, float]]) -> None:
        """Press the left button at the first point, move through the rest, release."""
        first, last = points[0], points[-1]
        await self.send("Input.dispatchMouseEvent", type="mouseMoved", x=first[0], y=first[1])
        await self.send("Input.dispatchMouseEvent", type="mousePressed", x=first[0],
                        y=first[1], button="left", buttons=1, clickCount=1)
        for x, y in points[1:]:
            await asyncio.sleep(0.05)
            await self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y,
                            button="left", buttons=1)
        await self.send("Input.dispatchMouseEvent", type="mouseReleased", x=last[0],
                        y=last[1], button="left", buttons=0, clickCount=1)

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))


@asynccontextmanager
async def chromium(profile: Path, size: tuple[int, int] = (1400, 900)):
    """A headless Chromium with one blank tab; yields its :class:`Page`."""
    executable = chromium_path()
    if executable is None:
        raise RuntimeError("no chromium on this machine")
    profile.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [executable, "--headless=new", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--no-first-run",
         "--disable-sync", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         f"--window-size={size[0]},{size[1]}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(200):
            if port_file.is_file() and port_file.read_text().strip():
                break
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as reply:
                targets = json.loads(await reply.text())
            page_target = next(t for t in targets if t["type"] == "page")
            async with http.ws_connect(page_target["webSocketDebuggerUrl"],
                                       max_msg_size=0) as socket:
                page = Page(socket)
                await page.send("Page.enable")
                await page.send("Runtime.enable")
                yield page
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """Ask a child to end; kill it if it has not within 10 s."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
