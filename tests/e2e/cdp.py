"""Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON
messages ended by NUL on file descriptors 3 and 4), so a test can type, click, wait and capture a
download without a websocket client or a browser-driver package."""
from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path

WINDOW = (1400, 900)


def _onto_3_and_4(read_end: int, write_end: int) -> None:
    """In the child: the pipe ends become fds 3 and 4 (copied above 10 first, so that neither can
    be overwritten by the other's move)."""
    high_r, high_w = fcntl.fcntl(read_end, fcntl.F_DUPFD, 10), fcntl.fcntl(write_end, fcntl.F_DUPFD, 10)
    os.dup2(high_r, 3)
    os.dup2(high_w, 4)


class Chromium:
    """One headless browser with one page; `with Chromium(binary, profile) as page: ...`."""

    def __init__(self, binary: str, profile: Path, timeout: float = 60.0):
        self.binary, self.profile, self.timeout = binary, profile, timeout
        self._next_id, self._replies, self._events = 0, {}, queue.Queue()
        self.seen: list[dict] = []  # every event so far, waited for or not
        self._lock = threading.Condition()
        self.session: str | None = None

    # -- process and pipe --------------------------------------------------------------------
    def __enter__(self) -> "Chromium":
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # the child's fd 3 reads our commands, its fd 4 writes its replies
        self.proc = subprocess.Popen(
            [self.binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--no-first-run", "--remote-debugging-pipe",
             f"--user-data-dir={self.profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=lambda: _onto_3_and_4(to_browser_r, from_browser_w))
        os.close(to_browser_r)
        os.close(from_browser_w)
        threading.Thread(target=self._read, daemon=True).start()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Network.enable")  # so a test can see every request the page makes
        # the page gets exactly WINDOW, whatever the browser's own frame takes
        self.call("Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=WINDOW[1], deviceScaleFactor=1, mobile=False)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.call("Browser.close", session=None)
        except Exception:  # already gone
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)

    def _read(self) -> None:
        buf = b""
        with os.fdopen(self._from_browser, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                buf += chunk
                *messages, buf = buf.split(b"\0")
                for raw in messages:
                    msg = json.loads(raw)
                    if "id" in msg:
                        with self._lock:
                            self._replies[msg["id"]] = msg
                            self._lock.notify_all()
                    else:
                        self.seen.append(msg)
                        self._events.put(msg)

    def call(self, method: str, session: str | None | bool = True, **params) -> dict:
        """Send one command (to the page's session unless `session` is None) and wait for its reply."""
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params}
        if session is True and self.session:
            msg["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        with self._lock:
            if not self._lock.wait_for(lambda: self._next_id in self._replies, timeout=self.timeout):
                raise TimeoutError(f"no reply to {method} in {self.timeout} s")
            reply = self._replies.pop(self._next_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str, check=lambda params: True) -> dict:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                event = self._events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if event["method"] == method and check(event.get("params", {})):
                return event["params"]
        raise TimeoutError(f"no {method} event in {self.timeout} s")

    # -- what a test does ----------------------------------------------------------------------
    def open(self, url: str) -> None:
        """Navigate and wait until the *new* document has loaded: a load event left over from the
        page before (or the old document still answering) does not count."""
        self.eval("window.__cdpLeaving = true")
        self.call("Page.navigate", url=url)
        while True:
            self.wait_event("Page.loadEventFired")
            if self.eval("window.__cdpLeaving === undefined && document.readyState === 'complete'"):
                return

    def eval(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def key(self, key: str) -> None:
        """Press and release one key as a keyboard would (`a`, `3`, `ArrowRight`, `Enter`)."""
        codes = {"ArrowRight": 39, "ArrowLeft": 37, "ArrowDown": 40, "ArrowUp": 38, "Enter": 13, "Home": 36, "End": 35}
        down = {"key": key, "windowsVirtualKeyCode": codes[key] if key in codes else ord(key.upper())}
        if len(key) == 1:
            down["text"] = key
        self.call("Input.dispatchKeyEvent", type="keyDown" if len(key) == 1 else "rawKeyDown", **down)
        self.call("Input.dispatchKeyEvent", type="keyUp", key=key, windowsVirtualKeyCode=down["windowsVirtualKeyCode"])

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element `selector` names (scrolled into view)."""
        box = self.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                        "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
                        "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def download_to(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.call("Browser.setDownloadBehavior", session=None, behavior="allow", downloadPath=str(folder),
                  eventsEnabled=True)

    def wait_download(self) -> dict:
        """Block until a download has completed; its Browser.downloadWillBegin event's params."""
        begun = self.wait_event("Browser.downloadWillBegin")
        self.wait_event("Browser.downloadProgress", lambda p: p.get("guid") == begun["guid"] and p.get("state") == "completed")
        return begun

    def requests(self) -> list[str]:
        """The URL of every request the page has made so far."""
        return [e["params"]["request"]["url"] for e in list(self.seen) if e["method"] == "Network.requestWillBeSent"]

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path
