"""A strict recording upstream: every byte fastgw sends is parsed by h11, the reference parser.

`RecordingUpstream` listens on one loopback port per service name and parses each
connection with an `h11.Connection` in the server role, one thread per connection.
Every request becomes a `Record` (connection, method, target, headers exactly as
received, body, trailers) and is answered with a small keep-alive 200 whose
`x-upstream-record` header names the record, so a client can tell which upstream
request its response came from. A protocol error, a request cut off by the close
of its connection, or bytes left over at the end, are recorded as well: fastgw
sending anything h11 does not accept is a finding in itself.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from dataclasses import dataclass, field

import h11

# fastgw forwards heads of up to 32 KiB and streams bodies; h11's own limit must not be the one hit
MAX_EVENT = 1 << 24
RAW_KEPT = 1 << 16  # bytes of each connection kept for failure messages


@dataclass
class Record:
    """One request as the upstream saw it (or as far as it got)."""

    seq: int  # arrival order over every service
    service: str  # the listener it came in on
    conn: int  # upstream connection id
    method: str = ""
    target: str = ""
    version: str = ""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # raw names, as received
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    complete: bool = False  # the whole message, up to its end, was received
    cut_off: bool = False  # the connection closed before the message ended
    error: str | None = None  # h11's protocol error while reading it
    leftover: bytes = b""  # unparsed bytes when the error hit or the connection ended

    def values(self, name: bytes) -> list[bytes]:
        """Values of the header `name` (lower-case), as many as were sent."""
        return [v for n, v in self.headers if n.lower() == name]

    def header(self, name: bytes) -> bytes | None:
        values = self.values(name)
        return values[0] if values else None

    def describe(self) -> str:
        head = "".join(f"\n      {n.decode('latin-1')}: {v.decode('latin-1')}"
                       for n, v in self.headers)
        state = "complete" if self.complete else "cut off" if self.cut_off else "INCOMPLETE"
        extra = f" error={self.error!r}" if self.error else ""
        extra += f" leftover={self.leftover[:200]!r}" if self.leftover else ""
        trailers = f"\n    trailers: {self.trailers!r}" if self.trailers else ""
        line = f"{self.method} {self.target} HTTP/{self.version}" if self.method else \
            "(no request line)"
        return (f"#{self.seq} [{self.service} conn {self.conn}, {state}{extra}] {line}{head}\n"
                f"    body: {self.body[:300]!r}{trailers}")


class RecordingUpstream:
    """h11-checked upstream listeners, one per service, sharing one list of records."""

    def __init__(self, services=("protected", "public")):
        self.records: list[Record] = []
        self.raw: dict[int, bytearray] = {}  # connection id -> first bytes received on it
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self._listeners: dict[str, socket.socket] = {}
        self._sockets: set[socket.socket] = set()
        self.last_activity = time.monotonic()
        self._closing = False
        for name in services:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            self._listeners[name] = sock

    def start(self) -> "RecordingUpstream":
        for name, sock in self._listeners.items():
            threading.Thread(target=self._accept, args=(name, sock), daemon=True).start()
        return self

    def stop(self) -> None:
        self._closing = True
        with self._lock:
            sockets = list(self._sockets) + list(self._listeners.values())
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self._listeners[service].getsockname()[1]}"

    # ------------------------------------------------------------ what the tests read

    def mark(self) -> int:
        """A position in the records; `since(mark)` is what arrived after it."""
        with self._lock:
            return len(self.records)

    def since(self, mark: int) -> list[Record]:
        with self._lock:
            return list(self.records[mark:])

    def settle(self, mark: int, quiet: float = 0.005, timeout: float = 0.5) -> None:
        """Wait until nothing has arrived for `quiet` seconds and no request that arrived
        after `mark` is half read (at most `timeout`): what fastgw sent is then recorded."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            now = time.monotonic()
            with self._lock:
                busy = any(not (r.complete or r.cut_off or r.error) for r in self.records[mark:])
                last = self.last_activity
            if now >= deadline or (not busy and now - max(last, start) >= quiet):
                return
            time.sleep(0.001)

    def raw_of(self, conn: int) -> bytes:
        with self._lock:
            return bytes(self.raw.get(conn, b""))

    # ------------------------------------------------------------ serving

    def _accept(self, service: str, listener: socket.socket) -> None:
        while not self._closing:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._sockets.add(sock)
            conn_id = next(self._conn_ids)
            threading.Thread(target=self._serve, args=(service, conn_id, sock), daemon=True).start()

    def _new_record(self, service: str, conn_id: int) -> Record:
        record = Record(seq=next(self._seq), service=service, conn=conn_id)
        with self._lock:
            self.records.append(record)
            self.last_activity = time.monotonic()
        return record

    def _serve(self, service: str, conn_id: int, sock: socket.socket) -> None:
        parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_EVENT)
        record: Record | None = None
        raw = self.raw.setdefault(conn_id, bytearray())
        try:
            while True:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                with self._lock:
                    self.last_activity = time.monotonic()
                    if len(raw) < RAW_KEPT:
                        raw += data[:RAW_KEPT - len(raw)]
                if not data and record is not None:
                    record.cut_off = True  # fastgw closed in the middle of a request
                    record.leftover = bytes(parser.trailing_data[0])
                    return
                try:
                    parser.receive_data(data)
                    record = self._events(service, conn_id, sock, parser, record)
                except h11.RemoteProtocolError as exc:
                    if record is None:
                        record = self._new_record(service, conn_id)
                    record.error = str(exc)
                    record.leftover = bytes(parser.trailing_data[0])
                    try:
                        sock.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n"
                                     b"connection: close\r\n\r\n")
                    except OSError:
                        pass
                    return
                if not data or parser.our_state is h11.MUST_CLOSE:
                    return
        finally:
            with self._lock:
                self._sockets.discard(sock)
            sock.close()

    def _events(self, service: str, conn_id: int, sock: socket.socket,
                parser: h11.Connection, record: Record | None) -> Record | None:
        """Handle every event the bytes received so far make; the request still open."""
        while True:
            event = parser.next_event()
            if event is h11.PAUSED:
                if parser.our_state is h11.DONE and parser.their_state is h11.DONE:
                    parser.start_next_cycle()
                    continue
                return record
            if event is h11.NEED_DATA:
                if parser.their_state is h11.IDLE and parser.trailing_data[0]:
                    if record is None:
                        record = self._new_record(service, conn_id)  # a head is arriving
                    record.leftover = bytes(parser.trailing_data[0])
                return record
            if isinstance(event, h11.Request):
                if record is None:
                    record = self._new_record(service, conn_id)
                record.method = event.method.decode("latin-1")
                record.target = event.target.decode("latin-1")
                record.version = event.http_version.decode("latin-1")
                record.headers = list(event.headers.raw_items())
            elif isinstance(event, h11.Data):
                record.body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                record.trailers = list(event.headers.raw_items())
                record.complete = True
                self._answer(sock, parser, record)
                record = None
            elif isinstance(event, h11.ConnectionClosed):
                return record

    @staticmethod
    def _answer(sock: socket.socket, parser: h11.Connection, record: Record) -> None:
        body = b'{"record":%d}' % record.seq
        headers = [("content-type", "application/json"), ("content-length", str(len(body))),
                   ("x-upstream-record", f"{record.service}:{record.seq}")]
        out = parser.send(h11.Response(status_code=200, headers=headers))
        if record.method != "HEAD":
            out += parser.send(h11.Data(data=body))
        out += parser.send(h11.EndOfMessage())
        try:
            sock.sendall(out)
        except OSError:
            pass
