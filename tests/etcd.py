"""A real etcd for tests (its own ports and data directory), and a TCP relay that can
cut a gateway node off from it."""

from __future__ import annotations

import base64
import json
import shutil
import signal
import socket
import subprocess
import threading
import urllib.request
from pathlib import Path

from conftest import free_port

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


class EtcdServer:
    """One etcd member on 127.0.0.1; `kv_*` speak its JSON gateway (/v3/kv/...)."""

    def __init__(self, data_dir: Path, name: str = "test"):
        self.data_dir = data_dir
        self.name = name
        self.initial_cluster: str | None = None  # the members of its cluster (cluster)
        self.port = free_port()
        self.peer_port = free_port()
        while self.peer_port == self.port:  # two probes can land on the same free port
            self.peer_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20, wait: bool = True) -> "EtcdServer":
        client, peer = f"http://{self.endpoint}", f"http://127.0.0.1:{self.peer_port}"
        self.proc = subprocess.Popen(
            [ETCD, "--name", self.name, "--data-dir", str(self.data_dir),
             "--listen-client-urls", client, "--advertise-client-urls", client,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", self.initial_cluster or f"{self.name}={peer}",
             "--unsafe-no-fsync"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        ready = self._ready = threading.Event()

        def read() -> None:
            for line in self.proc.stderr:
                self.output.append(line)
                if "ready to serve client requests" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20) -> None:
        if not self._ready.wait(timeout) or self.proc.poll() is not None:
            self.kill()
            raise RuntimeError("etcd did not start:\n" + "".join(self.output))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    # the JSON gateway: keys and values travel base64-encoded
    def _call(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(f"http://{self.endpoint}/v3/{path}",
                                         data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read())

    def put(self, key: str, value: bytes | str | dict) -> int:
        if isinstance(value, dict):
            value = json.dumps(value)
        if isinstance(value, str):
            value = value.encode()
        answer = self._call("kv/put", {"key": _b64(key.encode()), "value": _b64(value)})
        return int(answer["header"]["revision"])

    def put_all(self, values: dict[str, dict]) -> int:
        """Several puts in one transaction: one revision, one watch response."""
        ops = [{"requestPut": {"key": _b64(k.encode()), "value": _b64(json.dumps(v).encode())}}
               for k, v in values.items()]
        return int(self._call("kv/txn", {"success": ops})["header"]["revision"])

    def delete(self, key: str) -> int:
        return int(self._call("kv/deleterange", {"key": _b64(key.encode())})["header"]["revision"])

    def get(self, key: str) -> dict | None:
        answer = self._call("kv/range", {"key": _b64(key.encode())})
        kvs = answer.get("kvs") or []
        return json.loads(base64.b64decode(kvs[0]["value"])) if kvs else None

    def keys(self, prefix: str) -> list[str]:
        start = prefix.encode()
        end = start[:-1] + bytes([start[-1] + 1])
        answer = self._call("kv/range", {"key": _b64(start), "range_end": _b64(end),
                                         "keys_only": True})
        return [base64.b64decode(kv["key"]).decode() for kv in answer.get("kvs") or []]

    def revision(self) -> int:
        return int(self._call("kv/range", {"key": _b64(b"\0")})["header"]["revision"])

    def compact(self) -> int:
        revision = self.revision()
        self._call("kv/compaction", {"revision": str(revision), "physical": True})
        return revision


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class TcpRelay:
    """127.0.0.1:port -> target port, byte for byte, until `cut()` closes everything
    (and refuses new connections) and `restore()` listens again on the same port."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def restore(self) -> "TcpRelay":
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()
        return self

    start = restore

    def cut(self) -> None:
        with self._lock:
            victims, self._sockets = [self._listener, *self._sockets], []
        for sock in victims:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def etcd_cluster(folder: Path, size: int = 3) -> list[EtcdServer]:
    """`size` members of one etcd cluster (each ready once they have elected a leader)."""
    members = [EtcdServer(folder / f"member{i}", f"member{i}") for i in range(size)]
    ports = {m.port for m in members} | {m.peer_port for m in members}
    assert len(ports) == 2 * size, "two probes landed on the same free port"
    initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in members)
    for member in members:
        member.initial_cluster = initial
        member.start(wait=False)  # each is ready only once a quorum has started
    for member in members:
        member.wait_ready()
    return members
