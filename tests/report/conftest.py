"""Headless Chromium through the DevTools protocol, with a small stdlib WebSocket client."""

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
START_TIMEOUT_S = 60.0
LOAD_TIMEOUT_S = 60.0
SETTLE_S = 0.5  # wait after the load event for late console messages


class _WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol: masked text frames out, frames in."""

    def __init__(self, url: str, timeout: float):
        m = re.match(r"ws://([^:/]+):(\d+)(/.*)", url)
        assert m, url
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, "the DevTools server closed the handshake"
            head += chunk
        assert head.split(b"\r\n")[0].split()[1] == b"101", head[:200]
        self.buffer = head.split(b"\r\n\r\n", 1)[1]

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the DevTools server closed the connection")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def send(self, text: str) -> None:
        payload = text.encode()
        head = bytes([0x81])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            data = self._read(n)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise ConnectionError("the DevTools server closed the connection")
            if opcode in (0x9, 0xA):  # ping / pong: nothing to do for a short session
                continue
            message += data
            if b0 & 0x80:
                return message.decode()

    def close(self) -> None:
        self.sock.close()


@dataclass
class PageResult:
    """What loading a page produced."""

    errors: list = field(default_factory=list)  # console errors, exceptions, failed loads
    images: list = field(default_factory=list)  # {"alt", "width", "complete"} per <img>
    title: str = ""


class _Session:
    def __init__(self, ws: _WebSocket):
        self.ws, self.next_id, self.events = ws, 0, []

    def call(self, method: str, **params):
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                assert "error" not in msg, msg
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            assert time.monotonic() < deadline, f"no {method} within {timeout} s"
            self.events.append(json.loads(self.ws.recv()))

    def drain(self, seconds: float) -> None:
        self.ws.sock.settimeout(seconds)
        try:
            while True:
                self.events.append(json.loads(self.ws.recv()))
        except TimeoutError:
            pass
        finally:
            self.ws.sock.settimeout(LOAD_TIMEOUT_S)


def _errors(events) -> list:
    out = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(("console", [a.get("value", a.get("description")) for a in params["args"]]))
        elif method == "Runtime.exceptionThrown":
            out.append(("exception", params["exceptionDetails"].get("text")))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            out.append(("log", params["entry"].get("text"), params["entry"].get("url")))
    return out


_IMAGES_JS = (
    "JSON.stringify(Array.from(document.images).map(i => ({alt: i.alt, "
    "width: i.naturalWidth, complete: i.complete})))"
)


@pytest.fixture(scope="session")
def chromium():
    """A function ``load(path) -> PageResult`` backed by one headless Chromium."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package `chromium`)")
    profile = tempfile.mkdtemp(prefix="sgdtemp-chromium-")
    proc = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = None
        deadline = time.monotonic() + START_TIMEOUT_S
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                port = int(m.group(1))
        assert port is not None, "Chromium did not open its DevTools port"

        def load(path: Path) -> PageResult:
            new_tab = urllib.request.Request(
                f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT"
            )
            with urllib.request.urlopen(new_tab, timeout=30) as resp:
                target = json.loads(resp.read())
            ws = _WebSocket(target["webSocketDebuggerUrl"], LOAD_TIMEOUT_S)
            try:
                s = _Session(ws)
                for domain in ("Runtime", "Log", "Page"):
                    s.call(f"{domain}.enable")
                s.call("Page.navigate", url=Path(path).resolve().as_uri())
                s.wait_for("Page.loadEventFired", LOAD_TIMEOUT_S)
                s.drain(SETTLE_S)
                images = json.loads(
                    s.call("Runtime.evaluate", expression=_IMAGES_JS, returnByValue=True)["result"][
                        "value"
                    ]
                )
                title = s.call("Runtime.evaluate", expression="document.title", returnByValue=True)[
                    "result"
                ]["value"]
                return PageResult(errors=_errors(s.events), images=images, title=title)
            finally:
                ws.close()

        yield load
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="session")
def built_report(tmp_path_factory):
    """A report of a small simulated sweep with both studies beside the store."""
    from sgdtemp.analysis.synthetic import SyntheticSweep, write_synthetic_sweep
    from sgdtemp.report import build_report

    folder = tmp_path_factory.mktemp("report")
    db = folder / "runs.db"
    write_synthetic_sweep(
        db,
        SyntheticSweep(
            temperatures=(1 / 2048, 1 / 1024, 1 / 512),
            batch_sizes=(16, 32, 64),
            seeds=(0, 1),
            epochs=4,
            diverge=[(0.125, 64)],
        ),
    )
    (folder / "two_minima").mkdir()
    (folder / "two_minima" / "summary.json").write_text(
        json.dumps(
            {
                "checks": [
                    {
                        "claim": "isotropic: higher T moves mass to the wide minimum",
                        "holds": True,
                        "detail": "p_wide 0.1 -> 0.7",
                    },
                    {
                        "claim": "chains started in either basin agree",
                        "holds": False,
                        "detail": "2 of 4",
                    },
                ]
            }
        )
    )
    (folder / "two_minima" / "p_wide.png").write_bytes(base64.b64decode(PIXEL_PNG))
    (folder / "stationary").mkdir()
    (folder / "stationary" / "summary.json").write_text(
        json.dumps(
            {
                "checks": [{"claim": "Gibbs law", "holds": True, "detail": "max gap 1e-9"}],
                "p_wide": {
                    "temperatures": [0.1, 0.2, 0.4],
                    "fokker_planck": [0.1, 0.4, 0.6],
                    "gibbs": [0.1, 0.4, 0.6],
                    "laplace": [0.1, 0.38, 0.63],
                },
                "crossover_temperature": 0.26,
            }
        )
    )
    return build_report(db, folder / "out")


#: A 1x1 transparent PNG.
PIXEL_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5E"
    "rkJggg=="
)


@pytest.fixture(scope="session")
def built_stationary_report(tmp_path_factory):
    """A report of a simulated sweep trained until stationary, with the decomposition measured.

    Of its 12 runs the 2 of one cell did not become stationary, and the test descents of the 2
    runs of another cell did not converge.
    """
    from sgdtemp.analysis.synthetic import SyntheticSweep, write_synthetic_sweep
    from sgdtemp.report import build_report
    from sgdtemp.theory.temperature import lr_for_temperature

    folder = tmp_path_factory.mktemp("stationary-report")
    db = folder / "runs.db"
    write_synthetic_sweep(
        db,
        SyntheticSweep(
            temperatures=(1 / 2048, 1 / 1024, 1 / 512),
            batch_sizes=(16, 32),
            seeds=(0, 1),
            epochs=4,
            stationary=True,
            mechanisms=True,
            not_stationary=[(lr_for_temperature(1 / 512, 32), 32)],
            not_converged=[(lr_for_temperature(1 / 1024, 16), 16, "test")],
        ),
    )
    return build_report(db, folder / "out")
