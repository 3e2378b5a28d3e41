"""A gateway under attack: one fastgw, two services on a strict recording upstream.

`protected` (host protected.example, every path, jwt-auth with the consumer and
credential of test_jwt_auth) and `public` (host public.example, no plugin) each have
their own listener of one `RecordingUpstream`, so a record says which service fastgw
routed to. `EdgeGateway.exchange` writes raw bytes on one connection (from its own
loopback address, which X-Real-IP must then carry), reads every response until the
connection closes or a short time-out, and collects the upstream records that
arrived meanwhile; `EdgeGateway.check` runs the invariant over the result.
"""

from __future__ import annotations

import itertools
import select
import socket
import time
from dataclasses import dataclass, field

import pytest

from conftest import Gateway, service
from test_jwt_auth import consumer, token

from .invariant import Services, check_invariant, reference_requests
from .recording_upstream import RecordingUpstream

PROTECTED = "protected.example"
PUBLIC = "public.example"


def edge_config(upstream: RecordingUpstream) -> dict:
    every_path = [{"name": "all", "paths": ["/*"]}]
    return {"services": [
        service(upstream.url("protected"), every_path, name="protected", hosts=[PROTECTED],
                plugins={"jwt-auth": {}}),
        service(upstream.url("public"), every_path, name="public", hosts=[PUBLIC]),
    ], "consumers": [consumer()]}


# ---------------------------------------------------------------- responses, as a client reads them

@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[bytes, bytes]]  # names lower-case
    body: bytes
    interim: list[int] = field(default_factory=list)  # 1xx seen before it

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def __repr__(self):
        return f"<{self.status} {dict(self.headers)!r} {self.body[:120]!r}>"


class ResponseReader:
    """Parses the responses of one connection as bytes arrive; `garbage` is what is not one."""

    def __init__(self, methods):
        self.buf = b""
        self.methods = methods  # the request method of response i (HEAD has no body)
        self.responses: list[HttpResponse] = []
        self.interim: list[int] = []
        self.garbage = b""
        self.eof = False

    def feed(self, data: bytes) -> None:
        self.buf += data
        self._parse()

    def close(self) -> None:
        self.eof = True
        self._parse()
        if self.buf:
            self.garbage += self.buf
            self.buf = b""

    def _parse(self) -> None:
        while self.buf and not self.garbage:
            if not self.buf.startswith(b"HTTP/"[:len(self.buf)]):
                self.garbage, self.buf = self.buf, b""
                return
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buf[:end].split(b"\r\n")
            parts = lines[0].split(b" ", 2)
            try:
                status = int(parts[1])
            except (IndexError, ValueError):
                self.garbage, self.buf = self.buf, b""
                return
            headers = []
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers.append((name.strip().lower(), value.strip()))
            rest = self.buf[end + 4:]
            if 100 <= status < 200 and status != 101:
                self.interim.append(status)
                self.buf = rest
                continue
            method = self.methods(len(self.responses))
            values = dict(headers)
            if method == "HEAD" or status in (204, 304) or status == 101:
                body, rest = b"", rest
            elif b"chunked" in values.get(b"transfer-encoding", b"").lower():
                decoded = _dechunk(rest)
                if decoded is None:
                    return
                body, rest = decoded
            elif b"content-length" in values:
                n = int(values[b"content-length"])
                if len(rest) < n:
                    return
                body, rest = rest[:n], rest[n:]
            else:
                if not self.eof:
                    return
                body, rest = rest, b""
            self.responses.append(HttpResponse(status, headers, body, self.interim))
            self.interim = []
            self.buf = rest
            if status == 101:  # whatever follows is not HTTP
                self.garbage, self.buf = self.buf, b""


def _dechunk(data: bytes):
    body, pos = b"", 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return None
        size = int(data[pos:end].split(b";")[0], 16)
        pos = end + 2
        if size == 0:
            trailer_end = data.find(b"\r\n", pos)
            while trailer_end > pos:  # skip trailer fields
                pos = trailer_end + 2
                trailer_end = data.find(b"\r\n", pos)
            if trailer_end < 0:
                return None
            return body, data[trailer_end + 2:]
        if len(data) < pos + size + 2:
            return None
        body += data[pos:pos + size]
        pos += size + 2


# ---------------------------------------------------------------- one raw exchange

@dataclass
class Step:
    """One write of an exchange and what came back before the next write."""
    data: bytes
    executed: bool = False
    responses: list[HttpResponse] = field(default_factory=list)
    state: str = "open"  # open | closed | timeout, after its responses


@dataclass
class Exchange:
    client_ip: str
    deadline: float
    steps: list[Step]
    responses: list[HttpResponse] = field(default_factory=list)
    garbage: bytes = b""  # response bytes that do not parse as HTTP
    closed: bool = False  # the gateway closed (or reset) the connection
    records: list = field(default_factory=list)  # upstream records of this exchange
    elapsed: float = 0.0

    @property
    def sent(self) -> bytes:
        return b"".join(s.data for s in self.steps if s.executed)

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]

    def describe(self) -> str:
        steps = "\n".join(f"  step {i + 1} ({s.state}{'' if s.executed else ', not sent'}): "
                          f"{s.data[:600]!r}" for i, s in enumerate(self.steps))
        responses = "\n".join(f"  {r!r}" for r in self.responses) or "  (none)"
        records = "\n".join(f"  {r.describe()}" for r in self.records) or "  (none)"
        garbage = f"\nresponse garbage: {self.garbage[:300]!r}" if self.garbage else ""
        return (f"client {self.client_ip}, {'closed by the gateway' if self.closed else 'open'}"
                f" after {self.elapsed:.2f} s\nsent:\n{steps}\nresponses:\n{responses}"
                f"{garbage}\nupstream saw:\n{records}")


class EdgeGateway:
    """The gateway under attack, its upstream, and the raw-exchange helpers."""

    def __init__(self, gateway: Gateway, upstream: RecordingUpstream, token: str):
        self.gateway = gateway
        self.upstream = upstream
        self.token = token
        self.services = Services(routes={PROTECTED: "protected", PUBLIC: "public"},
                                 protected=frozenset({"protected"}),
                                 tokens={token: ("jack", "user-key")})
        self._ips = itertools.count(1)

    def _client_ip(self) -> str:
        """A loopback address of its own for each exchange (127.10.0.0/16 onwards)."""
        high, low = divmod(next(self._ips), 254)
        return f"127.{10 + high // 254 % 240}.{high % 254 + 1}.{low + 1}"

    def exchange(self, *steps: bytes, deadline: float = 1.0, grace: float = 0.05,
                 expect: str = "all") -> Exchange:
        """Write each step (the next only while the connection stays open) and read the
        responses, `deadline` seconds at most per step: with `expect="all"` until one for
        each complete request the client has sent (and one for bytes the reference parser
        refuses), with `expect="one"` until one more per step, as Http11Probe reads; then
        `grace` seconds more for anything extra, or the close."""
        ip = self._client_ip()
        ex = Exchange(ip, deadline, [Step(s) for s in steps])
        mark = self.upstream.mark()
        start = time.monotonic()
        sock = socket.socket()
        sock.bind((ip, 0))
        sock.settimeout(5)
        sock.connect(("127.0.0.1", self.gateway.port))
        sent = b""
        ref = reference_requests(b"")

        def method(i: int) -> str:  # read late: `ref` grows with every step written
            return ref.method(i)

        reader = ResponseReader(method)
        firsts: list[int] = []  # index of each executed step's first response
        try:
            for step in ex.steps:
                if ex.closed:
                    break
                try:
                    sock.sendall(step.data)
                except OSError:
                    ex.closed = True
                step.executed = True
                firsts.append(len(reader.responses))
                sent += step.data
                ref = reference_requests(sent)
                if expect == "one":
                    want = len(reader.responses) + 1
                else:
                    want = len(ref.requests) + (1 if ref.error else 0)
                step.state = self._read(sock, reader, want, deadline, grace)
                if step.state == "closed":
                    ex.closed = True
                if step.state != "open":
                    break
        finally:
            sock.close()
            reader.close()
            ex.responses = reader.responses
            ex.garbage = reader.garbage
            bounds = firsts + [len(ex.responses)]
            for i, first in enumerate(firsts):
                ex.steps[i].responses = ex.responses[first:bounds[i + 1]]
            self.upstream.settle(mark)
            ex.records = self.upstream.since(mark)
            ex.elapsed = time.monotonic() - start
        return ex

    @staticmethod
    def _read(sock: socket.socket, reader: ResponseReader, want: int, deadline: float,
              grace: float) -> str:
        """Read until `want` responses (then `grace` more), a close, or `deadline`."""
        end = time.monotonic() + deadline
        quiet_until = None
        while True:
            now = time.monotonic()
            if len(reader.responses) >= want and quiet_until is None:
                quiet_until = now + grace
            limit = min(end, quiet_until) if quiet_until is not None else end
            if now >= limit:
                return "open" if len(reader.responses) >= want else "timeout"
            ready, _, _ = select.select([sock], [], [], limit - now)
            if not ready:
                continue
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, OSError):
                data = b""
            if not data:
                reader.close()
                return "closed"
            reader.feed(data)
            if quiet_until is not None:
                quiet_until = time.monotonic() + grace

    # ------------------------------------------------------------ the invariant

    def violations(self, ex: Exchange) -> list[str]:
        return check_invariant(ex, self.services)

    def check(self, ex: Exchange) -> Exchange:
        """Fail the test with the whole exchange if it breaks the invariant."""
        problems = self.violations(ex)
        if problems:
            pytest.fail("invariant broken:\n- " + "\n- ".join(problems) + "\n" + ex.describe(),
                        pytrace=False)
        return ex


# ---------------------------------------------------------------- what the gateway answered

def answers_mismatch(specs: tuple, ex: Exchange) -> str | None:
    """None when the responses are `specs`: one per response, alternatives split by "|",
    each "2xx"/"4xx"/"5xx"/a status, "+close" for "and then the connection closed",
    "none" for "no response (time-out or close) from here on"."""
    got = ex.responses
    for i, spec in enumerate(specs):
        atoms = spec.split("|")
        if i >= len(got):
            if "none" in atoms:
                return None
            state = "closed" if ex.closed else "open"
            return f"response {i + 1}: expected {spec}, got none ({state})"
        status = got[i].status
        for atom in atoms:
            code, _, close = atom.partition("+")
            if code == "none":
                continue
            if code.endswith("xx") and status // 100 == int(code[0]) or code == str(status):
                if close and (i != len(got) - 1 or not ex.closed):
                    return (f"response {i + 1}: {status}, but the connection was not closed "
                            f"after it")
                break
        else:
            return f"response {i + 1}: expected {spec}, got {status}"
    if len(got) > len(specs):
        return f"{len(got)} responses, expected {len(specs)}: {ex.statuses}"
    return None


@pytest.fixture(scope="module")
def recording_upstream():
    server = RecordingUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def edge(recording_upstream, tmp_path_factory):
    """The gateway under attack, shared by a whole test module."""
    gw = Gateway(tmp_path_factory.mktemp("edge"), edge_config(recording_upstream),
                 env={"FASTGW_SHUTDOWN_TIMEOUT": "1"})
    gw.start()
    yield EdgeGateway(gw, recording_upstream, token())
    gw.stop()
