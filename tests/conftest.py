"""Fixtures: a real upstream, real `fastgw serve` processes, and raw HTTP clients."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from upstream import UpstreamServer

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """A `fastgw serve` process on a free port, with its configuration file.

    `plugins` names modules in tests/ (e.g. "faulty_plugin") registered as plugins in the
    master and in every worker, by tests/plugin_boot/sitecustomize.py."""

    def __init__(self, tmp_path: Path, config: dict, env: dict | None = None,
                 plugins: tuple[str, ...] = ()):
        self.port = free_port()
        self.config_path = tmp_path / "fastgw.yaml"
        self.write_config(config)
        self.env = {**os.environ, "FASTGW_CONFIG": str(self.config_path),
                    "FASTGW_LISTEN": f"127.0.0.1:{self.port}", "FASTGW_WORKERS": "1",
                    "FASTGW_METRICS_LISTEN": "off", "PYTHONUNBUFFERED": "1", **(env or {})}
        if plugins:
            path = [str(TESTS / "plugin_boot"), str(TESTS), self.env.get("PYTHONPATH", "")]
            self.env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
            self.env["TEST_GATEWAY_PLUGINS"] = ",".join(plugins)
        self.proc: subprocess.Popen | None = None
        self.log: list[str] = []

    def write_config(self, config: dict) -> None:
        self.config_path.write_text(yaml.safe_dump(config))

    def start(self, timeout: float = 15) -> "Gateway":
        self.launch()
        self.wait_for_log("serving on", timeout)
        return self

    def launch(self) -> "Gateway":
        """Start the process, its output read as it comes; `start` waits for it to serve."""
        self.proc = subprocess.Popen([sys.executable, "-m", "fastgw", "serve"], env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, cwd=self.config_path.parent)
        self._lines = threading.Condition()
        threading.Thread(target=self._read_output, daemon=True).start()
        return self

    def _read_output(self) -> None:
        for line in self.proc.stdout:
            with self._lines:
                self.log.append(line)
                self._lines.notify_all()
        with self._lines:
            self.exited = True
            self._lines.notify_all()

    exited = False

    def wait_for_log(self, text: str, timeout: float = 10, start: int = 0) -> str:
        """Wait until a line of the process output (from line `start` on) contains `text`."""
        deadline = time.monotonic() + timeout
        with self._lines:
            while True:
                for line in self.log[start:]:
                    if text in line:
                        return line
                if self.exited:
                    raise RuntimeError("fastgw exited:\n" + "".join(self.log))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {text!r} in fastgw output:\n" + "".join(self.log))
                self._lines.wait(left)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def worker_pids(self) -> list[int]:
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            return [int(pid) for pid in f.read().split()]

    def rss_kb(self) -> int:
        """Resident memory of the master and its workers."""
        total = 0
        for pid in [self.proc.pid, *self.worker_pids()]:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return total

    # clients
    def connect(self, timeout: float = 10) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, host: str = "api.test", headers=None,
                body=None, timeout: float = 10):
        """One request on a new connection: (status, headers dict, body bytes)."""
        conn = self.connect(timeout)
        try:
            conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def raw(self, timeout: float = 10) -> "RawClient":
        return RawClient(self.port, timeout)


class RawClient:
    """A socket for hand-written requests; responses parsed one at a time, in order."""

    def __init__(self, port: int, timeout: float):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.fp = self.sock.makefile("rb")

    def send(self, data: bytes) -> "RawClient":
        self.sock.sendall(data)
        return self

    def response(self, method: str = "GET"):
        """(status, headers dict, body) of the next response on the connection."""
        resp = http.client.HTTPResponse(_Shared(self.fp), method=method)
        resp.begin()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        return resp.status, headers, resp.read()

    def head(self) -> tuple[bytes, dict]:
        """The status line and headers of the next response, leaving its body unread."""
        status = self.fp.readline()
        headers = {}
        while (line := self.fp.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.lower()] = value.strip()
        return status, headers

    def read_until_closed(self) -> bytes:
        """Everything left on the connection, a reset counting as its end."""
        data = b""
        try:
            while chunk := self.fp.read1(65536):
                data += chunk
        except ConnectionResetError:
            pass
        return data

    def closed(self) -> bool:
        """True when the server has closed the connection (read returns EOF)."""
        try:
            return self.fp.read(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.fp.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Shared:
    """Lets HTTPResponse read from one buffered file shared by successive responses."""

    def __init__(self, fp):
        self.fp = fp

    def makefile(self, mode):
        return _Unclosable(self.fp)


class _Unclosable:
    """HTTPResponse closes its file when the body is read; the next response needs it."""

    def __init__(self, fp):
        self._fp = fp

    def close(self):
        pass

    def __getattr__(self, name):
        return getattr(self._fp, name)


@pytest.fixture(scope="session")
def upstream():
    server = UpstreamServer().start()
    yield server
    server.stop()


def service(upstream_url: str, routes: list[dict], **extra) -> dict:
    return {"name": extra.pop("name", "svc"), "upstream": {"url": upstream_url, **extra.pop(
        "upstream", {})}, "routes": routes, **extra}


@pytest.fixture
def gateway_factory(tmp_path):
    started: list[Gateway] = []

    def make(config: dict, env: dict | None = None, start: bool = True,
             plugins: tuple[str, ...] = ()) -> Gateway:
        folder = tmp_path / f"gw{len(started)}"
        folder.mkdir()
        gw = Gateway(folder, config, env, plugins)
        started.append(gw)
        return gw.start() if start else gw

    yield make
    for gw in started:
        gw.stop()


@pytest.fixture
def simple_gateway(upstream, gateway_factory):
    """Any host, everything under / relayed to the test upstream."""
    return gateway_factory({"services": [service(upstream.url, [
        {"name": "all", "paths": ["/*"]}])]})
