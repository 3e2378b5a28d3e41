"""The request path's faults, each answered and counted as the contract says.

1. A request whose body already went upstream is never sent again on another node.
2. An exception in a plugin is a logged 500, not a silent 400.
3. A 408 or 413 decided while the body streams is in the metrics and the access log.
4. A plugin that waits (PENDING) resumes or answers its exchange, in order, and one whose
   client left is dropped.
5. An upstream connection that stopped reading for a slow client reads again when it
   goes back to the pool.
6. A response head's fast-path verdict is remembered in a bounded table.

Every wait is for an event (a response, EOF, a log line), bounded by a socket time-out.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time

import pytest

from conftest import free_port, service
from faulty_plugin import MESSAGE
from test_metrics import scrape

WAIT = 5  # seconds any single event may take before the test fails


# ---------------------------------------------------------------- 1. retries and bodies

class DropNext:
    """Shared by the nodes of one upstream: the first node to read a request head after
    `arm()` reads that request (head and whole body), then closes without answering."""

    def __init__(self):
        self.lock = threading.Lock()
        self.armed = False
        self.node = None  # the node that dropped it
        self.head_seen = threading.Event()
        self.dropped = threading.Event()
        self.dropped_request = b""

    def arm(self) -> None:
        with self.lock:
            self.armed = True

    def take(self, node) -> bool:
        with self.lock:
            if not self.armed:
                return False
            self.armed = False
            self.node = node
            return True


class ScriptedNode:
    """A keep-alive HTTP/1.1 node on a raw socket: answers 200 "ok" to each request
    (Content-Length bodies only), except the one `drop` picks. Keeps every byte it read."""

    def __init__(self, drop: DropNext):
        self.drop = drop
        self.lock = threading.Lock()
        self.received = bytearray()  # from every connection, in arrival order
        self.heads: list[bytes] = []  # request heads it answered
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _recv(self, sock) -> bytes:
        data = sock.recv(65536)
        with self.lock:
            self.received += data
        return data

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(WAIT * 2)
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = self._recv(sock)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                dropping = self.drop.take(self)
                if dropping:
                    self.drop.head_seen.set()
                while len(buf) < length:  # a dropped request's body too: it reached us
                    data = self._recv(sock)
                    if not data:
                        return
                    buf += data
                if dropping:
                    self.drop.dropped_request = head + b"\r\n\r\n" + buf[:length]
                    return  # close without answering
                buf = buf[length:]
                with self.lock:
                    self.heads.append(head)
                sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        except OSError:
            return
        finally:
            sock.close()
            if self.drop.node is self:
                self.drop.dropped.set()

    def seen(self) -> int:
        with self.lock:
            return len(self.received)

    def close(self) -> None:
        self.listener.close()


READ_TIMEOUT = 4  # the upstream read time-out; the retry bug answered 504 after it


@pytest.fixture
def two_nodes(gateway_factory):
    """A gateway with two scripted nodes, retries 1, and a keep-alive connection pooled to
    each node (one warm-up request per node)."""
    drop = DropNext()
    nodes = [ScriptedNode(drop), ScriptedNode(drop)]
    gw = gateway_factory({"services": [{
        "name": "svc",
        "upstream": {"nodes": [{"host": "127.0.0.1", "port": n.port} for n in nodes],
                     "retries": 1, "timeout": {"connect": 2, "send": 5, "read": READ_TIMEOUT}},
        "routes": [{"name": "all", "paths": ["/*"]}]}]})
    with gw.raw(WAIT) as c:
        for _ in nodes:
            c.send(b"GET /warm-up HTTP/1.1\r\nHost: a\r\n\r\n")
            status, _, body = c.response()
            assert (status, body) == (200, b"ok")
    assert [len(n.heads) for n in nodes] == [1, 1]  # both nodes have a pooled connection
    yield gw, drop, nodes
    for n in nodes:
        n.close()


def other(nodes, node):
    return nodes[1] if nodes[0] is node else nodes[0]


# SPEC 3: "retries: null  # default: nodes - 1; only before any byte was sent upstream"
# SPEC 5: "upstream refused or unreachable (after retries) | 502"
@pytest.mark.parametrize("body_after", ["100-continue", "pause"])
def test_request_whose_body_went_upstream_is_not_retried(two_nodes, body_after):
    gw, drop, nodes = two_nodes
    before = [n.seen() for n in nodes]
    drop.arm()
    with gw.raw(WAIT + READ_TIMEOUT) as c:
        head = b"PUT /things/1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
        if body_after == "100-continue":
            c.send(head + b"Expect: 100-continue\r\n\r\n")
            status_line, _ = c.head()
            assert status_line == b"HTTP/1.1 100 Continue\r\n"
        else:
            c.send(head + b"\r\n")
            # the body follows once the head is upstream, on the pooled connection
            assert drop.head_seen.wait(WAIT)
        c.send(b"hello")
        sent = time.monotonic()
        status, _, body = c.response("PUT")
        elapsed = time.monotonic() - sent
    assert drop.dropped.wait(WAIT)
    assert drop.dropped_request.endswith(b"\r\n\r\nhello")  # the body did reach the first node
    assert status == 502, (status, body, f"after {elapsed:.2f} s")
    assert json.loads(body) == {"error_msg": "502 Bad Gateway"}
    assert elapsed < READ_TIMEOUT / 2, f"502 only after {elapsed:.2f} s"
    second = other(nodes, drop.node)
    # not a byte of the PUT on the other node: no head there without its body
    assert second.seen() == before[nodes.index(second)], bytes(second.received)


def test_get_on_a_dead_pooled_connection_is_retried(two_nodes):
    gw, drop, nodes = two_nodes
    drop.arm()
    with gw.raw(WAIT) as c:
        c.send(b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n")
        status, _, body = c.response()
    assert (status, body) == (200, b"ok")
    assert drop.dropped.wait(WAIT)
    assert other(nodes, drop.node).heads[-1].startswith(b"GET /again HTTP/1.1\r\n")


def test_get_on_a_dead_pooled_connection_is_retried_once_even_with_retries_zero(
        gateway_factory):
    """nginx gives a request one more try when its cached connection died (the upstream
    closes idle connections when it likes): it is not counted against `retries`, which is 0
    for a single node by default. Once only: a fresh connection that dies is a 502."""
    drop = DropNext()
    node = ScriptedNode(drop)
    try:
        gw = gateway_factory({"services": [{
            "name": "svc", "upstream": {"nodes": [{"host": "127.0.0.1", "port": node.port}]},
            "routes": [{"name": "all", "paths": ["/*"]}]}]})
        with gw.raw(WAIT) as c:
            c.send(b"GET /warm-up HTTP/1.1\r\nHost: a\r\n\r\n")
            assert c.response()[0] == 200  # a connection pooled
            drop.arm()
            c.send(b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n")
            assert c.response()[:3:2] == (200, b"ok")
            assert drop.dropped.wait(WAIT)
            assert node.heads[-1].startswith(b"GET /again HTTP/1.1\r\n")
            # a POST on a pooled connection that dies is not sent again
            drop.dropped.clear()
            drop.arm()
            c.send(b"POST /once HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
            assert c.response()[0] == 502
        assert drop.dropped.wait(WAIT)
        assert not any(h.startswith(b"POST") for h in node.heads)
    finally:
        node.close()


# ---------------------------------------------------------------- 2. exceptions in plugins

# SPEC 5: "Error bodies are JSON: {"error_msg": "..."}"; SPEC says nothing of a fault of the
# gateway's own, so SPEC 1 applies: "where this contract is silent, do what an APISIX, Envoy
# or Kong user would expect": a plugin that throws is a 500 there, logged with its error.
# It is no "malformed request" (SPEC 5: 400): the request was whole and well-formed.
def test_exception_in_a_plugin_is_a_logged_500(upstream, gateway_factory):
    gw = gateway_factory({"services": [service(upstream.url, [
        {"name": "boom", "paths": ["/explode"], "plugins": {"explode": {}}},
        {"name": "all", "paths": ["/*"]}])]}, plugins=("faulty_plugin",))
    start = len(gw.log)
    with gw.raw(WAIT) as c:
        c.send(b"GET /explode HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, body = c.response()
        assert (status, json.loads(body)) == (500, {"error_msg": "500 Internal Server Error"})
        assert headers["content-type"] == "application/json"
        assert headers["connection"] == "keep-alive"
        # the request was complete: the connection serves the next one
        c.send(b"GET /json HTTP/1.1\r\nHost: a\r\n\r\n")
        assert c.response()[0] == 200
        # and the same when both come at once, pipelined
        c.send(b"GET /explode HTTP/1.1\r\nHost: a\r\n\r\nGET /json HTTP/1.1\r\nHost: a\r\n\r\n")
        assert c.response()[0] == 500
        assert c.response()[0] == 200
    gw.wait_for_log(f"RuntimeError: {MESSAGE}", WAIT, start)
    assert any("Traceback" in line for line in gw.log[start:]), "".join(gw.log[start:])


# ---------------------------------------------------------------- 3. 408 and 413 mid-body

def counting_gateway(upstream, gateway_factory, **env):
    """A gateway whose metrics listener is on and whose access log is its stdout."""
    port = free_port()
    gw = gateway_factory({"services": [service(upstream.url, [{"name": "all", "paths": ["/*"]}])]},
                         env={"FASTGW_METRICS_LISTEN": f"127.0.0.1:{port}",
                              "FASTGW_ACCESS_LOG": "stdout", **env})
    gw.metrics_port = port
    return gw


def recorded(gw, status: int) -> tuple[float, int]:
    """(fastgw_requests_total summed over services and routes, access log lines) with
    `status`, once a request made after it has been logged: whatever the gateway records
    of an earlier request is recorded by then."""
    assert gw.request("GET", "/json", timeout=WAIT)[0] == 200
    gw.wait_for_log(" GET /json 200 ", WAIT)
    counted = sum(v for (name, labels), v in scrape(gw).items()
                  if name == "fastgw_requests_total" and dict(labels)["status"] == str(status))
    lines = [line.split() for line in gw.log]
    logged = sum(1 for f in lines if len(f) == 11 and f[1] == "127.0.0.1" and f[4] == str(status))
    return counted, logged


# SPEC 5: "body over the limit | 413", FASTGW_MAX_BODY_BYTES "larger request bodies get 413";
# SPEC 2 (README "Metrics"): fastgw_requests_total{service,route,status};
# README "Access log": "one line per request".
def test_413_while_a_chunked_body_streams_is_counted_and_logged(upstream, gateway_factory):
    gw = counting_gateway(upstream, gateway_factory, FASTGW_MAX_BODY_BYTES="1000")
    with gw.raw(WAIT) as c:
        # chunked: no Content-Length to refuse up front; 100-continue: the head is being
        # relayed before any of the body arrives
        c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
               b"Expect: 100-continue\r\n\r\n")
        assert c.head()[0] == b"HTTP/1.1 100 Continue\r\n"
        c.send(b"258\r\n" + b"x" * 600 + b"\r\n")
        c.send(b"258\r\n" + b"x" * 600 + b"\r\n0\r\n\r\n")
        status, _, body = c.response()
        assert (status, json.loads(body)) == (413, {"error_msg": "413 Request Entity Too Large"})
        assert c.closed()
    assert recorded(gw, 413) == (1, 1)  # (metrics, access log)


# SPEC 5: "headers not received in time | 408, connection closed". FASTGW_HEADER_TIMEOUT is
# the only request time-out in settings.py (there is no body time-out); a body that stops
# coming must not hold the connection and its upstream one for ever (SPEC 1: as nginx's
# client_body_timeout, a 408).
def test_408_while_a_body_streams_is_counted_and_logged(upstream, gateway_factory):
    gw = counting_gateway(upstream, gateway_factory, FASTGW_HEADER_TIMEOUT="0.5")
    with gw.raw(WAIT) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        try:
            status, _, body = c.response()  # the other 7 bytes never come
        except TimeoutError:
            pytest.fail(f"no answer within {WAIT} s to a body stalled past the 0.5 s time-out")
        assert (status, json.loads(body)) == (408, {"error_msg": "408 Request Timeout"})
        assert c.closed()
    assert recorded(gw, 408) == (1, 1)  # (metrics, access log)


# ---------------------------------------------------------------- 4. a plugin that waits

@pytest.fixture
def waiting_gateway(upstream, gateway_factory):
    return gateway_factory({"services": [service(upstream.url, [
        {"name": "waits", "paths": ["/wait/*"], "plugins": {"later": {}}},
        {"name": "refuses", "paths": ["/no/*"], "plugins": {"later": {"refuse": True}}},
        {"name": "all", "paths": ["/*"]}])]}, plugins=("waiting_plugin",))


def test_a_pending_plugin_resumes_the_exchange_with_its_header(upstream, waiting_gateway):
    with waiting_gateway.raw(WAIT) as c:
        c.send(b"GET /wait/a HTTP/1.1\r\nHost: a\r\n\r\n")
        assert c.response()[0] == 200
    [seen] = [r for r in upstream.requests if r["target"] == "/wait/a"]
    assert [v for n, v in seen["headers"] if n.lower() == "x-waited"] == ["yes"]


def test_a_pending_plugin_answers_and_nothing_goes_upstream(upstream, waiting_gateway):
    before = len(upstream.requests)  # the upstream serves the whole module
    with waiting_gateway.raw(WAIT) as c:
        c.send(b"GET /no/a HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, body = c.response()
        assert (status, json.loads(body)) == (403, {"error_msg": "refused after waiting"})
        assert headers["connection"] == "keep-alive"
        c.send(b"GET /json HTTP/1.1\r\nHost: a\r\n\r\n")  # the connection goes on
        assert c.response()[0] == 200
    assert [r["target"] for r in upstream.requests[before:]] == ["/json"]


def test_requests_pipelined_behind_a_pending_one_are_answered_in_order(upstream,
                                                                        waiting_gateway):
    before = len(upstream.requests)  # the upstream serves the whole module
    with waiting_gateway.raw(WAIT) as c:
        c.send(b"GET /wait/1 HTTP/1.1\r\nHost: a\r\n\r\nGET /json?n=2 HTTP/1.1\r\nHost: a\r\n\r\n"
               b"GET /no/3 HTTP/1.1\r\nHost: a\r\n\r\nGET /json?n=4 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert [c.response()[0] for _ in range(4)] == [200, 200, 403, 200]
    assert [r["target"] for r in upstream.requests[before:]] == ["/wait/1", "/json?n=2",
                                                                 "/json?n=4"]


def test_a_client_gone_while_its_plugin_waits_leaves_nothing_behind(upstream, waiting_gateway):
    start, before = len(waiting_gateway.log), len(upstream.requests)
    c = waiting_gateway.raw(WAIT)
    c.send(b"GET /wait/gone HTTP/1.1\r\nHost: a\r\n\r\n")
    # a reset, not a half-close (after which a whole request is still answered)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    # a request on a new connection, sent after the plugin resumed the abandoned one
    with waiting_gateway.raw(WAIT) as d:
        d.send(b"GET /wait/next HTTP/1.1\r\nHost: a\r\n\r\n")
        assert d.response()[0] == 200
    assert [r["target"] for r in upstream.requests[before:]] == ["/wait/next"]
    assert not any("Traceback" in line for line in waiting_gateway.log[start:])


# ---------------------------------------------------------------- 5. flow control

class FakeTransport:
    """An asyncio transport that keeps what is written and whether reading is paused;
    `on_write` runs after each write (to fill the buffer past its high-water mark)."""

    def __init__(self, on_write=None):
        self.written = []
        self.reading = True
        self.on_write = on_write

    def write(self, data):
        self.written.append(bytes(data))
        if self.on_write is not None:
            self.on_write()

    def writelines(self, parts):
        self.write(b"".join(parts))

    def get_write_buffer_size(self):
        return sum(map(len, self.written))

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def is_closing(self):
        return False

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True

    closed = False

    def close(self):
        self.closed = True

    abort = close


class StandIns:
    """The real gateway, client connection and one pooled upstream connection, with
    stand-in sockets: what the relay writes either way is in `client_side.written` and
    `upstream_side.written`."""

    def __init__(self, client_on_write=None, environ=None):
        import asyncio

        import uvloop

        from fastgw.config.schema import validate
        from fastgw.server import ClientConnection, Gateway
        from fastgw.settings import Settings
        from fastgw.upstream import UpstreamConnection
        from fastgw.workers import snapshot_factory

        self.loop = uvloop.new_event_loop()
        asyncio.set_event_loop(self.loop)
        settings = Settings.load(environ=environ or {})
        gateway = Gateway(settings, snapshot_factory(settings))
        gateway.apply(validate({"services": [{"name": "s", "upstream": {"url": "http://127.0.0.1:9"},
                                              "routes": [{"name": "r", "paths": ["/*"]}]}]}), 1)
        self.pool = next(iter(gateway.pools.pools.values()))
        self.conn = UpstreamConnection(self.pool)
        self.upstream_side = FakeTransport()
        self.conn.connection_made(self.upstream_side)
        self.pool.idle.append(self.conn)
        self.client = ClientConnection(gateway)
        self.client_side = FakeTransport(on_write=client_on_write and client_on_write(self.client))
        self.client.connection_made(self.client_side)

    def __enter__(self) -> "StandIns":
        return self

    def __exit__(self, *exc) -> None:
        import asyncio
        asyncio.set_event_loop(None)
        self.loop.close()


def test_a_connection_released_while_its_client_is_slow_reads_again():
    """The client's buffer fills with the last bytes of a response (pause_writing): the
    upstream connection stops reading, and the response ends. The connection goes back
    to the pool reading again, or it would never see its next response (nor its close).
    The relay itself runs; only the two sockets are stand-ins, to fill a buffer at will."""
    with StandIns(client_on_write=lambda client: client.pause_writing) as relay:
        relay.client.data_received(b"GET /big HTTP/1.1\r\nHost: a.example\r\n\r\n")
        assert relay.upstream_side.written[-1].startswith(b"GET /big ")
        relay.conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody")

        assert relay.pool.idle == [relay.conn]  # kept for the next request
        assert relay.upstream_side.reading


# SPEC 5: "request and response bodies streamed in both directions with back-pressure";
# "keep-alive". The upstream's write buffer filled while the request body went up (the
# client's reading paused for it), and the answer came before it drained: the exchange
# ends, and the client, whose connection stays open, is read again (it was not, ever).
def test_a_client_paused_for_a_full_upstream_buffer_reads_again_after_its_answer():
    with StandIns() as relay:
        relay.client.data_received(b"POST /up HTTP/1.1\r\nHost: a.example\r\n"
                                   b"Content-Length: 5\r\n\r\nhello")
        assert relay.conn.exchange is not None
        relay.conn.pause_writing()  # the body is in the upstream's write buffer, unread
        assert not relay.client_side.reading  # back-pressure: the client is not read
        relay.conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        assert relay.client_side.written[-1].endswith(b"\r\n\r\nok")
        assert relay.pool.idle == [relay.conn]  # the exchange ended cleanly, kept
        relay.conn.resume_writing()  # and then the upstream reads what was buffered
        # the client's connection is kept alive: its next request must be read
        assert relay.client_side.reading, relay.client.read_pauses


SLOW_READ = 1  # the upstream read time-out, and the keep-alive one, for a client not reading
BIG = 40 * 1024 * 1024  # more than loopback's socket buffers and fastgw's hold


def _not_reading(upstream, gateway_factory, keepalive: float):
    """A client whose 40 MiB answer is under way and which reads none of it: (gateway,
    socket)."""
    gw = gateway_factory({"services": [service(upstream.url, [{"name": "all", "paths": ["/*"]}],
                                               upstream={"timeout": {"read": SLOW_READ}})]},
                         env={"FASTGW_KEEPALIVE_TIMEOUT": str(keepalive)})
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=WAIT)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.sendall(b"GET /bytes?n=%d HTTP/1.1\r\nHost: a\r\n\r\n" % BIG)
    return gw, sock


def _read_all(sock) -> bytes:
    data = bytearray()
    try:
        while chunk := sock.recv(1 << 20):
            data += chunk
            if len(data) >= BIG and data.find(b"\r\n\r\n") + 4 + BIG <= len(data):
                break
    except (ConnectionResetError, socket.timeout):
        pass
    return bytes(data)


def test_a_client_that_reads_late_is_not_cut_off_by_the_upstream_read_timeout(
        upstream, gateway_factory):
    """While the client reads nothing, fastgw stops reading the upstream: the upstream's
    read time-out does not run then (nginx runs it only while it waits on the upstream);
    the client's does, the keep-alive time-out, as nginx's send_timeout."""
    gw, sock = _not_reading(upstream, gateway_factory, keepalive=30)
    with sock:
        time.sleep(3 * SLOW_READ)  # the stimulus: three read time-outs without reading
        data = _read_all(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and len(body) == BIG, (head, len(body))


def test_a_client_that_reads_nothing_for_the_keepalive_timeout_is_cut_off(
        upstream, gateway_factory):
    gw, sock = _not_reading(upstream, gateway_factory, keepalive=SLOW_READ)
    with sock:
        time.sleep(4 * SLOW_READ)  # the stimulus: it reads nothing, well past its time-out
        data = _read_all(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and len(body) < BIG
    # and the gateway serves on
    assert gw.request("GET", "/json")[0] == 200


def test_an_idle_connection_the_upstream_closes_leaves_the_pool_at_once():
    """The pool's idle stack holds open connections only, so the next request never
    takes one the upstream has closed (its FIN came, its close is not done yet)."""
    with StandIns() as relay:
        relay.conn.eof_received()
        assert relay.pool.idle == [] and relay.conn not in relay.pool.open
        relay.pool.release(relay.conn, True, 0.0)  # an exchange on it ending cleanly
        assert relay.pool.idle == []  # not kept either


def test_under_load_the_metrics_are_folded_between_ticks_in_small_batches():
    """A fold stalls every request in flight for as long as it takes, about 0.2 µs per
    request it counts: after one that found requests finishing at FOLD_BUSY a second or
    more, the next comes in FOLD_EVERY, not at the next tick; after one that found fewer,
    folding is the tick's again. (The stand-ins' gateway has no tick: only those folds can
    run here.)"""
    from fastgw.server import FOLD_BUSY, FOLD_EVERY, TICK

    with StandIns() as relay:
        gateway = relay.client.gateway
        finished = gateway.snapshot.router.routes[0].stats  # what the next fold counts
        relay.conn.limit = 10_000  # the one stand-in connection carries every request

        def serve(count: int) -> None:
            for _ in range(count):
                relay.client.data_received(b"GET /a HTTP/1.1\r\nHost: a.example\r\n\r\n")
                relay.conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

        def answered() -> int:
            return gateway.stats.requests.get(("s", "r", 200), 0)

        slow = int(FOLD_BUSY * TICK) - 1  # a tick's worth, just under the rate
        serve(slow)
        gateway.fold(TICK)
        assert not finished and answered() == slow
        assert gateway._folding is None

        busy = int(FOLD_BUSY * TICK)
        serve(busy)
        gateway.fold(TICK)
        assert not finished and answered() == slow + busy and gateway._folding is not None

        serve(3)  # under FOLD_BUSY * FOLD_EVERY: the fold after these ends the fast folds
        until = relay.loop.time() + 5
        while finished and relay.loop.time() < until:
            relay.loop.run_until_complete(asyncio.sleep(FOLD_EVERY / 2))  # lets the timer run
        assert not finished and answered() == slow + busy + 3
        assert gateway._folding is None  # no timer: the tick's again


# ---------------------------------------------------------------- 6. checked response heads

NGINX_HEAD = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\n"
              b"Content-Length: 5\r\nConnection: keep-alive")
FORWARDED_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
                  b"server: fastgw\r\n\r\n")


def test_a_response_head_seen_before_is_forwarded_as_the_first_time():
    """Its fast-path verdict (relay._CHECKED) is a function of its bytes alone: the same
    head again is rewritten the same way, and a head for the slow path is re-framed by it
    every time it comes."""
    from fastgw import relay as fastgw_relay

    with StandIns() as relay:
        for _ in range(3):
            relay.client.data_received(b"GET /a HTTP/1.1\r\nHost: a.example\r\n\r\n")
            relay.conn.data_received(NGINX_HEAD + b"\r\n\r\nhello")
            assert relay.client_side.written[-1] == FORWARDED_HEAD + b"hello"
            assert NGINX_HEAD in fastgw_relay._CHECKED
        for _ in range(2):  # chunked from the upstream: rebuilt by the slow path each time
            relay.client.data_received(b"GET /b HTTP/1.1\r\nHost: a.example\r\n\r\n")
            relay.conn.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     b"5\r\nhello\r\n0\r\n\r\n")
            assert relay.client_side.written[-1].startswith(b"HTTP/1.1 200 OK\r\nserver: fastgw")
            assert relay.client_side.written[-1].endswith(b"transfer-encoding: chunked\r\n\r\n"
                                                          b"5\r\nhello\r\n0\r\n\r\n")


def test_a_response_head_remembered_for_the_slow_path_is_not_checked_again(monkeypatch):
    """A chunked head, say: its verdict (the slow path) is remembered like a fast one's,
    so the second time no search runs on it."""
    from fastgw import relay as fastgw_relay

    chunked = b"HTTP/1.1 200 OK\r\nX-Once: 1\r\nTransfer-Encoding: chunked"

    def no_search(*args):
        raise AssertionError("the head was checked again")

    with StandIns() as relay:
        for _ in range(2):
            relay.client.data_received(b"GET /b HTTP/1.1\r\nHost: a.example\r\n\r\n")
            relay.conn.data_received(chunked + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
            assert relay.client_side.written[-1].endswith(b"5\r\nhello\r\n0\r\n\r\n")
            assert fastgw_relay._CHECKED[chunked] == ()
            monkeypatch.setattr(fastgw_relay, "_SLOW_FIELD", no_search)
            monkeypatch.setattr(fastgw_relay, "_FAST_STATUS", None)  # not even read


# Heads the fast path's own checks would take (an HTTP/1.1 status, a Content-Length, no
# field that frames) but llhttp refuses: no parser reads a response on the fast path, so
# its verdict on a head must carry llhttp's.
MALFORMED_HEADS = [
    b"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 5",
    b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 5",
    b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\nContent-Length: 5",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6",
    b"HTTP/1.1 200 OK\nContent-Length: 5",
    b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 5",
    b"HTTP/1.1 200 OK\r\n: empty\r\nContent-Length: 5",
]


@pytest.mark.parametrize("head", MALFORMED_HEADS)
def test_a_response_head_llhttp_refuses_is_a_502_every_time_it_comes(head):
    """The first time (checked) and the second (its verdict remembered): the client gets
    502 and nothing of the response, and the connection is not kept."""
    for _ in range(2):
        with StandIns() as relay:
            relay.client.data_received(b"GET /a HTTP/1.1\r\nHost: a.example\r\n\r\n")
            relay.conn.data_received(head + b"\r\n\r\nhello")
            assert [w.split(b"\r\n", 1)[0] for w in relay.client_side.written] == [
                b"HTTP/1.1 502 Bad Gateway"]
            assert relay.pool.idle == [] and relay.conn.exchange is None


@pytest.mark.parametrize("framing", [
    b"Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"Transfer-Encoding: gzip\r\n\r\nabc",  # read until the close, by llhttp
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
])
def test_a_response_in_a_transfer_coding_other_than_chunked_is_a_502(framing):
    """The body is re-framed on its way: its other codings would reach the client dropped,
    and the body corrupted (or, read until the close, cut short as if broken off)."""
    with StandIns() as relay:
        relay.client.data_received(b"GET /a HTTP/1.1\r\nHost: a.example\r\n\r\n")
        relay.conn.data_received(b"HTTP/1.1 200 OK\r\n" + framing)
        assert [w.split(b"\r\n", 1)[0] for w in relay.client_side.written] == [
            b"HTTP/1.1 502 Bad Gateway"]
        assert relay.pool.idle == [] and relay.conn.exchange is None


def test_an_answer_without_a_body_is_forwarded_whatever_coding_it_names():
    """A 304 (and a HEAD answer) only says how a GET's body would be framed: nothing of it
    is re-framed, so its coding is no fault."""
    with StandIns() as relay:
        relay.client.data_received(b"GET /a HTTP/1.1\r\nHost: a.example\r\n\r\n")
        relay.conn.data_received(b"HTTP/1.1 304 Not Modified\r\n"
                                 b"Transfer-Encoding: gzip, chunked\r\n\r\n")
        assert relay.client_side.written[-1].startswith(b"HTTP/1.1 304 Not Modified\r\n")
        assert relay.pool.idle == [relay.conn]


def test_every_connection_field_of_a_response_names_fields_that_are_dropped():
    with StandIns() as relay:
        relay.client.data_received(b"GET /a HTTP/1.1\r\nHost: a.example\r\n\r\n")
        relay.conn.data_received(b"HTTP/1.1 200 OK\r\nConnection: x-a\r\nConnection: x-b\r\n"
                                 b"X-A: 1\r\nX-B: 2\r\nX-C: 3\r\nContent-Length: 2\r\n\r\nok")
        head = b"".join(relay.client_side.written).lower()
        assert b"x-a:" not in head and b"x-b:" not in head and b"x-c: 3" in head


def test_a_204_is_forwarded_without_a_content_length():
    """RFC 9110 8.6: never on a 204 (a 304 and a HEAD answer keep theirs)."""
    with StandIns() as relay:
        relay.client.data_received(b"GET /a HTTP/1.1\r\nHost: a.example\r\n\r\n")
        relay.conn.data_received(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
        (head,) = relay.client_side.written
        assert head.startswith(b"HTTP/1.1 204") and b"content-length" not in head.lower()
        relay.client.data_received(b"GET /a HTTP/1.1\r\nHost: a.example\r\n\r\n")
        relay.conn.data_received(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n")
        assert b"content-length: 5\r\n" in relay.client_side.written[-1]


def test_a_status_line_with_control_characters_is_rebuilt_not_forwarded():
    """llhttp takes a reason phrase with a NUL in it, which strict clients refuse: the
    slow path writes its own status line."""
    with StandIns() as relay:
        relay.client.data_received(b"GET /a HTTP/1.1\r\nHost: a.example\r\n\r\n")
        relay.conn.data_received(b"HTTP/1.1 200 O\x00K\r\nContent-Length: 2\r\n\r\nok")
        data = b"".join(relay.client_side.written)
        assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"\x00" not in data
        assert data.endswith(b"\r\n\r\nok")


@pytest.mark.parametrize("version,continues", [(b"1.1", True), (b"1.0", False)])
def test_100_continue_is_sent_to_http11_clients_only(version, continues):
    """HTTP/1.0 has no 1xx: its client's expectation is ignored (RFC 9110 10.1.1, 15.2)."""
    with StandIns() as relay:
        relay.client.data_received(b"POST /a HTTP/" + version + b"\r\nHost: a.example\r\n"
                                   b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert relay.upstream_side.written  # the head is upstream, the body still to come
        assert (b"HTTP/1.1 100 Continue\r\n\r\n" in relay.client_side.written) is continues
        relay.client.data_received(b"hello")
        assert relay.upstream_side.written[-1] == b"hello"


def test_the_table_of_checked_response_heads_stays_within_its_bounds():
    """Distinct heads never grow it past its size, and a long head is not kept."""
    from fastgw import relay

    for i in range(3 * relay._CHECKED_SIZE):
        assert relay.fast_head(b"HTTP/1.1 200 OK\r\nContent-Length: %d" % i)[:2] == (200, i)
        assert len(relay._CHECKED) <= relay._CHECKED_SIZE
    long = NGINX_HEAD + b"\r\nX-Long: " + b"x" * relay._CHECKED_HEAD
    assert relay.fast_head(long)[:2] == (200, 5) and long not in relay._CHECKED


# ---------------------------------------------------------------- 7. plain requests

BROWSER_FIELDS = b"User-Agent: Mozilla/5.0\r\nAccept: */*\r\nAccept-Encoding: gzip\r\n"


def _relayed(request: bytes) -> tuple[bytes, dict | None, bytes]:
    """What goes upstream for `request`, the exchange's `fields` (None: not plain), and
    the answer to a response of five bytes."""
    with StandIns() as relay:
        relay.client.data_received(request)
        ex = relay.conn.exchange
        relay.conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        return relay.upstream_side.written[-1], ex.fields, relay.client_side.written[-1]


def test_a_request_from_behind_a_proxy_that_adds_x_forwarded_port_stays_plain():
    """AWS ALB and Traefik add it to every request: it is dropped from the fields dict."""
    sent, fields, _ = _relayed(b"GET /a HTTP/1.1\r\nHost: a.example\r\n"
                               b"X-Forwarded-Port: 443\r\nAccept: */*\r\n\r\n")
    assert fields == {b"accept": b"*/*"}
    assert b"x-forwarded-port" not in sent.lower() and b"accept: */*" in sent


@pytest.mark.parametrize("value", [b"keep-alive", b"Keep-Alive"])
def test_connection_keep_alive_on_http11_is_a_plain_request_without_the_field(value):
    """Browsers and most HTTP libraries send it: it says what HTTP/1.1 means anyway, so the
    request takes the plain path and goes upstream as it would without the field."""
    without = b"GET /a HTTP/1.1\r\nHost: a.example\r\n" + BROWSER_FIELDS + b"\r\n"
    head, fields, answer = _relayed(b"GET /a HTTP/1.1\r\nHost: a.example\r\n" + BROWSER_FIELDS +
                                    b"Connection: " + value + b"\r\n\r\n")
    assert fields is not None and b"connection" not in fields  # plain
    assert head == _relayed(without)[0] and b"connection" not in head.lower()
    assert answer == FORWARDED_HEAD.replace(b"Content-Type: text/plain\r\n", b"") + b"hello"


@pytest.mark.parametrize("request_bytes", [
    b"GET /a HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive, X-Secret\r\n"
    b"X-Secret: s\r\n\r\n",  # a field to drop
    b"GET /a HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n"
    b"\r\n",
    b"GET /a HTTP/1.0\r\nHost: a.example\r\nConnection: keep-alive\r\n\r\n",  # 1.0's answer differs
])
def test_connection_keep_alive_beside_what_is_not_plain_is_read_as_before(request_bytes):
    head, fields, answer = _relayed(request_bytes)
    assert fields is None
    assert b"x-secret" not in head.lower() and b"connection: keep-alive" not in head.lower()
    http10 = b"HTTP/1.0" in request_bytes
    assert (b"connection: keep-alive" in answer) == http10


# A body's length, and the fields a proxy in front adds, are read from `fields` too
# (ClientConnection._usual_fields): what goes upstream is what the field-by-field reading
# sends, fastgw's own framing and forwarding fields included.

_UPSTREAM_FIELDS = b"user-agent: Mozilla/5.0\r\naccept: */*\r\naccept-encoding: gzip\r\n"


def _forwarding(forwarded_for: bytes) -> bytes:
    return (b"x-real-ip: 127.0.0.1\r\nx-forwarded-proto: http\r\nx-forwarded-for: " +
            forwarded_for + b"\r\nx-forwarded-host: a.example\r\n")


@pytest.mark.parametrize("fields_in, forwarded_for, framing", [
    (b"Content-Length: 005\r\n", b"127.0.0.1", b"content-length: 5\r\n"),
    (b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nX-Real-IP: 6.6.6.6\r\n"
     b"X-Forwarded-Host: forged.example\r\n", b"10.0.0.1, 127.0.0.1", b""),
    (b"Connection: keep-alive\r\nX-Forwarded-For: 10.0.0.1\r\nContent-Length: 5\r\n",
     b"10.0.0.1, 127.0.0.1", b"content-length: 5\r\n"),
])
def test_a_request_with_a_body_or_from_behind_a_proxy_is_sent_from_its_fields(
        fields_in, forwarded_for, framing):
    body = b"hello" if framing else b""
    head, fields, answer = _relayed(b"POST /a HTTP/1.1\r\nHost: a.example\r\n" + BROWSER_FIELDS +
                                    fields_in + b"\r\n" + body)
    assert fields is not None  # read from its fields
    assert head == (b"POST /a HTTP/1.1\r\nhost: a.example\r\n" + _UPSTREAM_FIELDS +
                    _forwarding(forwarded_for) + framing + b"\r\n" + body)
    assert answer == FORWARDED_HEAD.replace(b"Content-Type: text/plain\r\n", b"") + b"hello"


@pytest.mark.parametrize("value", [b"close", b"Close"])
def test_connection_close_on_http11_is_read_from_the_fields_and_closes_after_the_answer(value):
    with StandIns() as relay:
        relay.client.data_received(b"GET /a HTTP/1.1\r\nHost: a.example\r\n" + BROWSER_FIELDS +
                                   b"Connection: " + value + b"\r\n\r\n")
        ex = relay.conn.exchange
        assert ex.fields is not None  # read from its fields
        assert relay.upstream_side.written == [b"GET /a HTTP/1.1\r\nhost: a.example\r\n" +
                                               _UPSTREAM_FIELDS + _forwarding(b"127.0.0.1") +
                                               b"\r\n"]
        relay.conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        assert relay.client_side.written == [
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nserver: fastgw\r\n"
            b"connection: close\r\n\r\nhello"]
        assert relay.client_side.closed and relay.pool.idle == [relay.conn]


def test_a_body_read_from_its_fields_may_come_after_the_head_is_sent():
    with StandIns() as relay:
        relay.client.data_received(b"POST /a HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\n"
                                   b"\r\n")
        ex = relay.conn.exchange
        assert ex.fields is not None and relay.upstream_side.written == [
            b"POST /a HTTP/1.1\r\nhost: a.example\r\n" + _forwarding(b"127.0.0.1") +
            b"content-length: 5\r\n\r\n"]
        relay.client.data_received(b"hel")
        relay.client.data_received(b"lo")
        assert relay.upstream_side.written[1:] == [b"hel", b"lo"] and ex.req_done
        relay.conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        assert relay.client_side.written == [
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nserver: fastgw\r\n\r\n"]
        assert relay.pool.idle == [relay.conn]  # whole both ways: reused


def test_a_body_length_over_the_limit_read_from_the_fields_is_refused():
    with StandIns() as relay:
        relay.client.data_received(b"POST /a HTTP/1.1\r\nHost: a.example\r\n"
                                   b"Content-Length: 999999999999\r\n\r\nhello")
        assert relay.upstream_side.written == []
        assert len(relay.client_side.written) == 1
        assert relay.client_side.written[0].startswith(b"HTTP/1.1 413 ")
        assert b"connection: close" in relay.client_side.written[0].lower()
        assert relay.client_side.closed  # the body that was not read cannot frame the next


@pytest.mark.parametrize("fields_in, forwarded_for", [
    (b"X_Forwarded_Proto: https\r\nX-Forwarded-For: 10.0.0.1\r\n", b"10.0.0.1, 127.0.0.1"),
    (b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\n",
     b"10.0.0.1, 10.0.0.2, 127.0.0.1"),
])
def test_forwarding_fields_in_another_spelling_or_twice_are_read_field_by_field(
        fields_in, forwarded_for):
    head, fields, _ = _relayed(b"GET /a HTTP/1.1\r\nHost: a.example\r\n" + BROWSER_FIELDS +
                               fields_in + b"\r\n")
    assert fields is None
    assert head == (b"GET /a HTTP/1.1\r\nhost: a.example\r\n" + _UPSTREAM_FIELDS +
                    _forwarding(forwarded_for) + b"\r\n")


# ---------------------------------------------------------------- 8. time-outs on the tick

def test_the_tick_times_connections_out_neither_early_nor_late():
    """Gateway.tick skips the time-out check of a connection until the shortest time-out
    could have passed: a head and an idle connection still time out on the first tick
    after their own time-out (whole ticks counted from their last progress)."""
    from fastgw.server import ClientConnection

    with StandIns(environ={"FASTGW_HEADER_TIMEOUT": "0.25",
                           "FASTGW_KEEPALIVE_TIMEOUT": "0.35"}) as relay:
        gateway = relay.client.gateway
        idle, in_head = relay.client_side, FakeTransport()
        head = ClientConnection(gateway)
        head.connection_made(in_head)
        head.data_received(b"GET /a HTTP/1.1\r\nHost: a.example\r\n")
        ticks = {}
        for tick in range(1, 8):
            gateway.tick()
            gateway._ticker.cancel()  # ticked here, one by one
            for name, transport in (("head", in_head), ("idle", idle)):
                if transport.closed:
                    ticks.setdefault(name, tick)
        assert ticks == {"head": 4, "idle": 5}  # 3 whole ticks >= 0.25 s, 4 >= 0.35 s
        assert in_head.written[0].startswith(b"HTTP/1.1 408 ")
