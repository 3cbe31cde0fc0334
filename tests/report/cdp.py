"""A tiny Chrome DevTools Protocol client over --remote-debugging-pipe (no websockets, no
playwright): load a page in headless Chromium, collect console errors, exceptions and failed
loads, check the images, take a full-page screenshot."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
# FACTS.md: as root, headless needs --no-sandbox; the background-networking flags keep it off
# the (closed) network.
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
]  # fmt: skip


@dataclass
class PageCheck:
    console_errors: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    title: str = ""
    screenshot: Path | None = None


class Browser:
    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.profile = tempfile.TemporaryDirectory(prefix="webssl-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def fds() -> None:  # chromium reads commands on fd 3 and writes replies on fd 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile.name}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=fds, pass_fds=(3, 4),
        )  # fmt: skip
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from chromium")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the pipe")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        out: dict[str, Any] = json.loads(msg)
        return out

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)

    def wait_event(self, method: str) -> dict[str, Any]:
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + self.timeout
        while True:
            e = self._read_message(deadline)
            if e.get("method") == method:
                return e
            self.events.append(e)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.profile.cleanup()


def check_page(path: Path, screenshot: Path | None = None, width: int = 1280) -> PageCheck:
    """Load ``path`` (file) and report console errors, exceptions, failed loads and broken images."""
    b = Browser()
    try:
        target = b.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = b.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            b.send(f"{domain}.enable", session=s)
        b.send("Emulation.setDeviceMetricsOverride",
               {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=s)  # fmt: skip
        b.send("Page.navigate", {"url": path.resolve().as_uri()}, session=s)
        b.wait_event("Page.loadEventFired")
        res = PageCheck()
        imgs = b.send("Runtime.evaluate", {
            "expression": "JSON.stringify([...document.images].map(i => ({alt: i.alt, complete: i.complete,"
                          " w: i.naturalWidth, h: i.naturalHeight})))",
            "returnByValue": True}, session=s)  # fmt: skip
        res.images = json.loads(imgs["result"]["value"])
        res.broken_images = [i["alt"] for i in res.images if not i["complete"] or i["w"] == 0]
        res.title = b.send("Runtime.evaluate", {"expression": "document.title", "returnByValue": True},
                           session=s)["result"]["value"]  # fmt: skip
        if screenshot is not None:
            m = b.send("Page.getLayoutMetrics", session=s)
            h = min(int(m["cssContentSize"]["height"]), 12000)
            shot = b.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                          "clip": {"x": 0, "y": 0, "width": width, "height": h, "scale": 1}}, session=s)  # fmt: skip
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            res.screenshot = screenshot
        time.sleep(0.2)
        b.send("Runtime.evaluate", {"expression": "1"}, session=s)  # flush pending events
        for e in b.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                res.console_errors.append(
                    "console: "
                    + " ".join(
                        str(a.get("value", a.get("description", ""))) for a in p.get("args", [])
                    )
                )
            elif m == "Runtime.exceptionThrown":
                res.console_errors.append(
                    "exception: " + str(p.get("exceptionDetails", {}).get("text"))
                )
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                res.console_errors.append("log: " + str(p["entry"].get("text")))
            elif m == "Network.loadingFailed":
                res.console_errors.append("network: " + str(p.get("errorText")))
        return res
    finally:
        b.close()
