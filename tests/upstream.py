"""A real HTTP/1.1 upstream for the tests, on its own event loop in a thread.

Behaviour is chosen by path, so one server serves every test:

    /json                  a fixed JSON document
    /bytes?n=N[&chunked=1][&close=1][&chunk=K]
                           N deterministic bytes: Content-Length, chunked, or read-until-close
    /broken?n=N            promises 2N bytes, sends N, then closes
    /slow?delay=S          answers after S seconds
    /status/N              answers with status N (no body for 204 and 304)
    /interim               103 Early Hints, then 200
    /early                 answers 413 at once, before the request body is read
    /drop                  reads the request, then closes without answering
    /hold?id=K[&close=1]   echoes (as below) once the test calls `release(K)`
    /connection-header     a response naming a header in its Connection field
    anything else          echoes the request as JSON: method, target, headers, body size
                           and sha256, and the id of the connection it came on

Every request is recorded in `requests` as the upstream saw it, and connections are
counted (`connections` opened, `closed`, `max_open` at once); `wait_until` waits for
any of these to reach a state.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import socket
import struct
import threading
from urllib.parse import parse_qs, urlsplit

import httptools

JSON_DOC = json.dumps({"slideshow": {"author": "Yours Truly", "title": "Sample Slide Show",
                                     "slides": [{"title": "Wake up!", "type": "all"}]}}).encode()


def pattern(n: int) -> bytes:
    """n deterministic bytes (so a client can check them without a copy)."""
    block = bytes(range(256)) * 256
    return (block * (n // len(block) + 1))[:n]


def pattern_sha256(n: int) -> str:
    h = hashlib.sha256()
    block = bytes(range(256)) * 256
    full, rest = divmod(n, len(block))
    for _ in range(full):
        h.update(block)
    h.update(block[:rest])
    return h.hexdigest()


class UpstreamProtocol(asyncio.Protocol):
    ids = itertools.count(1)

    def __init__(self, server: "UpstreamServer"):
        self.server = server
        self.id = next(self.ids)
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.paused = asyncio.Event()
        self.paused.set()

    def connection_made(self, transport):
        self.transport = transport
        with self.server.changed:
            self.server.connections += 1
            self.server.max_open = max(self.server.max_open,
                                       self.server.connections - self.server.closed)
            self.server.changed.notify_all()

    def connection_lost(self, exc):
        with self.server.changed:
            self.server.closed += 1
            self.server.changed.notify_all()

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def pause_writing(self):
        self.paused.clear()

    def resume_writing(self):
        self.paused.set()

    # parser callbacks
    def on_message_begin(self):
        self.url = b""
        self.headers = []
        self.sha = hashlib.sha256()
        self.size = 0
        self.answered = False

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers.append((name.decode().lower(), value.decode("latin-1")))

    def on_headers_complete(self):
        self.method = self.parser.get_method().decode()
        self.version = self.parser.get_http_version()
        if self.url.startswith(b"/early"):
            self.answered = True
            self._respond(413, b'{"early": true}', close=True)

    def on_body(self, chunk):
        self.sha.update(chunk)
        self.size += len(chunk)

    def on_message_complete(self):
        record = {"method": self.method, "target": self.url.decode(), "headers": self.headers,
                  "size": self.size, "sha256": self.sha.hexdigest(), "conn": self.id,
                  "version": self.version}
        with self.server.changed:
            self.server.requests.append(record)
            self.server.changed.notify_all()
        if not self.answered:
            self.server.loop.create_task(self.handle(record, self.parser.should_keep_alive()))

    def _respond(self, status, body, headers=(), close=False):
        head = [f"HTTP/1.1 {status} X\r\n".encode(), b"content-type: application/json\r\n"]
        for name, value in headers:
            head.append(f"{name}: {value}\r\n".encode())
        if status not in (204, 304):
            head.append(b"content-length: %d\r\n" % len(body))
        if close:
            head.append(b"connection: close\r\n")
        self.transport.write(b"".join(head) + b"\r\n" + (b"" if self.method == "HEAD" or status in (204, 304) else body))
        if close:
            self.transport.close()

    async def handle(self, req, keep_alive):
        url = urlsplit(req["target"])
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path
        if path == "/json":
            self._respond(200, JSON_DOC, close=not keep_alive)
        elif path == "/bytes":
            await self._bytes(int(q["n"]), q.get("chunked") == "1", q.get("close") == "1",
                              int(q.get("chunk", 65536)), keep_alive)
        elif path == "/broken":
            n = int(q["n"])
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (2 * n))
            self.transport.write(pattern(n))
            await asyncio.sleep(0.05)
            self.transport.close()
        elif path == "/reset":  # a read-until-close body, then a reset (RST), not a close
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n"
                                 + pattern(int(q["n"])))
            await asyncio.sleep(0.05)
            self.transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()
        elif path == "/hold":
            await self.server.held(q["id"]).wait()
            self._respond(200, json.dumps(req).encode(), close=q.get("close") == "1")
        elif path == "/drop":
            self.transport.close()
        elif path == "/slow":
            await asyncio.sleep(float(q["delay"]))
            self._respond(200, b'{"slow": true}', close=not keep_alive)
        elif path.startswith("/status/"):
            self._respond(int(path.rsplit("/", 1)[1]), b'{"status": true}', close=not keep_alive)
        elif path == "/interim":
            self.transport.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n")
            self._respond(200, b'{"final": true}', close=not keep_alive)
        elif path == "/connection-header":
            self._respond(200, b"{}", headers=[("connection", "x-private"),
                                               ("x-private", "secret"), ("x-public", "yes")],
                          close=not keep_alive)
        else:
            self._respond(200, json.dumps(req).encode(), close=not keep_alive)

    async def _bytes(self, n, chunked, close, chunk, keep_alive):
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
        if chunked:
            head += b"transfer-encoding: chunked\r\n"
        elif close:
            head += b"connection: close\r\n"
        else:
            head += b"content-length: %d\r\n" % n
        self.transport.write(head + b"\r\n")
        block = pattern(max(chunk, 65536) * 2)
        offset = 0
        while offset < n:
            size = min(chunk, n - offset)
            start = offset % 65536  # the pattern repeats every 64 KiB
            data = block[start:start + size]
            self.transport.write(b"%x\r\n%s\r\n" % (size, data) if chunked else data)
            offset += size
            await self.paused.wait()
        if chunked:
            self.transport.write(b"0\r\n\r\n")
        if close or not keep_alive:
            self.transport.close()


class LoopThread:
    """A server on its own event loop in a daemon thread, on a free loopback port;
    `_serve()` returns the coroutine that starts it (an asyncio server)."""

    NAME = "test server"

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _serve(self):
        raise NotImplementedError

    def _run(self):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(self._serve())
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    def start(self):
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{self.NAME} did not start")
        return self

    def stop(self) -> None:
        def shutdown():
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            self.loop.call_soon(self.loop.stop)
        self.loop.call_soon_threadsafe(shutdown)
        self._thread.join(5)


class UpstreamServer(LoopThread):
    NAME = "test upstream"

    def __init__(self, ssl_context=None):
        super().__init__()
        self.ssl = ssl_context
        self.requests: list[dict] = []
        self.connections = 0
        self.closed = 0
        self.max_open = 0
        self.changed = threading.Condition()
        self._held: dict[str, asyncio.Event] = {}

    def _serve(self):
        return self.loop.create_server(lambda: UpstreamProtocol(self), "127.0.0.1", 0,
                                       ssl=self.ssl)

    def held(self, key: str) -> asyncio.Event:
        """The event /hold?id=`key` waits for (on the server's loop)."""
        event = self._held.get(key)
        if event is None:
            event = self._held[key] = asyncio.Event()
        return event

    def release(self, key: str) -> None:
        """Let the held request `key` be answered (it may not have arrived yet)."""
        self.loop.call_soon_threadsafe(lambda: self.held(key).set())

    def wait_until(self, predicate, timeout: float = 5) -> bool:
        """Wait until predicate() holds (checked whenever a connection or request comes
        or goes); False if it still does not after `timeout` seconds."""
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://127.0.0.1:{self.port}"
