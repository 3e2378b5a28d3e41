"""Relaying: what the upstream receives, what the client gets back, and how connections behave."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time
from collections import Counter

import pytest
import uvloop

from conftest import service
from fastgw.server import LONG_TURN, Gateway
from fastgw.settings import Settings
from fastgw.workers import snapshot_factory
from upstream import pattern_sha256


def echo(body: bytes) -> dict:
    return json.loads(body)


def header(req: dict, name: str) -> str | None:
    values = [v for n, v in req["headers"] if n == name]
    return values[0] if values else None


def test_request_is_relayed_with_forwarding_headers(simple_gateway):
    status, headers, body = simple_gateway.request("GET", "/anything/x?a=1&b=2",
                                                   host="api.test:8080")
    assert status == 200
    assert headers["server"] == "fastgw"
    seen = echo(body)
    assert seen["target"] == "/anything/x?a=1&b=2"
    assert header(seen, "host") == "api.test:8080"
    assert header(seen, "x-forwarded-for") == "127.0.0.1"
    assert header(seen, "x-real-ip") == "127.0.0.1"
    assert header(seen, "x-forwarded-proto") == "http"
    assert header(seen, "x-forwarded-host") == "api.test:8080"


@pytest.mark.parametrize("forwarded_for", [None, b"10.1.1.1"])
def test_an_http10_request_without_host_gets_no_empty_x_forwarded_host(simple_gateway,
                                                                      forwarded_for):
    """HTTP/1.0 needs no Host; with none there is no host to say it asked for."""
    extra = b"" if forwarded_for is None else b"X-Forwarded-For: " + forwarded_for + b"\r\n"
    with simple_gateway.raw() as c:
        c.send(b"GET /anything HTTP/1.0\r\n" + extra + b"\r\n")
        status, _, body = c.response()
    assert status == 200
    seen = echo(body)
    assert [n for n, _ in seen["headers"] if n == "x-forwarded-host"] == []
    assert header(seen, "x-forwarded-for") == ", ".join(
        ([] if forwarded_for is None else [forwarded_for.decode()]) + ["127.0.0.1"])
    assert header(seen, "x-real-ip") == "127.0.0.1"


def test_client_x_forwarded_for_is_extended_and_spoofed_identity_removed(simple_gateway):
    _, _, body = simple_gateway.request("GET", "/", headers={
        "X-Forwarded-For": "10.1.1.1", "X-Real-IP": "6.6.6.6",
        "X-Consumer-Username": "admin", "X-Credential-Identifier": "admin-key"})
    seen = echo(body)
    assert header(seen, "x-forwarded-for") == "10.1.1.1, 127.0.0.1"
    assert header(seen, "x-real-ip") == "127.0.0.1"
    assert header(seen, "x-consumer-username") is None
    assert header(seen, "x-credential-identifier") is None


@pytest.mark.parametrize("name", [
    "Forwarded", "X-Forwarded-Port", "X-Forwarded-Prefix", "X-Forwarded-Ssl",
    "X-Forwarded-Scheme", "X-Forwarded-Server", "X-Original-URL", "X-Rewrite-URL",
    "x_original_url"])
def test_what_a_proxy_in_front_would_say_is_not_taken_from_the_client(simple_gateway, name):
    """Frameworks read these as the proxy's word (Spring prefers Forwarded to the
    X-Forwarded-* fastgw sets; IIS and Symfony route by X-Original-URL)."""
    _, _, body = simple_gateway.request("GET", "/", headers={
        name: "for=6.6.6.6;proto=https;host=admin.internal" if name == "Forwarded"
        else "/admin", "X-Kept": "1"})
    seen = echo(body)
    assert not [k for k, _ in seen["headers"]
                if k.replace("_", "-") == name.lower().replace("_", "-")]
    assert header(seen, "x-kept") == "1"


def test_hop_by_hop_headers_are_not_forwarded_either_way(simple_gateway):
    with simple_gateway.raw() as c:
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\n"
               b"X-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"
               b"Proxy-Authorization: Basic eA==\r\nUpgrade-Insecure-Requests: 1\r\n\r\n")
        status, _, body = c.response()
    seen = echo(body)
    names = {n for n, _ in seen["headers"]}
    assert status == 200
    assert not names & {"connection", "x-secret", "keep-alive", "te", "proxy-authorization"}
    assert "upgrade-insecure-requests" in names  # end-to-end, only looks similar
    status, headers, _ = simple_gateway.request("GET", "/connection-header")
    assert status == 200 and headers["x-public"] == "yes"
    assert "x-private" not in headers


def test_keep_alive_serves_many_requests_on_one_connection_and_reuses_upstream(
        simple_gateway, upstream):
    conn = simple_gateway.connect()
    upstream_conns = set()
    for i in range(150):
        conn.request("GET", f"/ka/{i}", headers={"Host": "a"})
        resp = conn.getresponse()
        seen = echo(resp.read())
        assert resp.status == 200 and seen["target"] == f"/ka/{i}"
        upstream_conns.add(seen["conn"])
    conn.close()
    assert len(upstream_conns) == 1  # one pooled upstream connection served them all


def test_pipelined_requests_are_answered_in_order(simple_gateway):
    with simple_gateway.raw() as c:
        c.send(b"".join(b"GET /slow?delay=%s&n=%d HTTP/1.1\r\nHost: a\r\n\r\n"
                        % (b"0.2" if i == 0 else b"0", i) for i in range(5))
               + b"GET /nothing-here HTTP/1.1\r\nHost: a\r\n\r\n"
               + b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        for i in range(5):
            status, _, body = c.response()
            assert status == 200 and body == b'{"slow": true}'
        status, _, body = c.response()
        assert status == 200 and echo(body)["target"] == "/nothing-here"
        status, _, body = c.response()
        assert echo(body)["size"] == 5


def test_many_pipelined_requests_in_one_write(simple_gateway):
    count = 2000
    with simple_gateway.raw(timeout=30) as c:
        c.send(b"".join(b"GET /p/%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(count)))
        for i in range(count):
            status, _, body = c.response()
            assert status == 200 and echo(body)["target"] == f"/p/{i}"


def test_http10_request_gets_response_and_close(simple_gateway):
    with simple_gateway.raw() as c:
        c.send(b"GET /bytes?n=1000&chunked=1 HTTP/1.0\r\n\r\n")
        status, headers, body = c.response()
        assert status == 200 and len(body) == 1000
        assert "transfer-encoding" not in headers
        assert c.closed()


def test_http10_keep_alive_is_honoured(simple_gateway):
    with simple_gateway.raw() as c:
        for _ in range(3):
            c.send(b"GET /json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, body = c.response()
            assert status == 200 and headers["connection"] == "keep-alive"
            assert int(headers["content-length"]) == len(body)


def test_connection_close_is_honoured(simple_gateway):
    with simple_gateway.raw() as c:
        c.send(b"GET /json HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        status, headers, _ = c.response()
        assert status == 200 and headers["connection"] == "close"
        assert c.closed()


@pytest.mark.parametrize("path,status", [("/status/204", 204), ("/status/304", 304)])
def test_no_body_statuses(simple_gateway, path, status):
    with simple_gateway.raw() as c:
        c.send(b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % path.encode())
        got, headers, body = c.response()
        assert got == status and body == b""
        c.send(b"GET /json HTTP/1.1\r\nHost: a\r\n\r\n")  # the connection is still in step
        assert c.response()[0] == 200


def test_head_response_has_length_but_no_body(simple_gateway):
    with simple_gateway.raw() as c:
        c.send(b"GET /json HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, body = c.response()
        assert status == 200 and len(body) == int(headers["content-length"]) > 0
        for _ in range(3):  # the length a GET would have, and nothing after the head
            c.send(b"HEAD /json HTTP/1.1\r\nHost: a\r\n\r\n")
            status, headers, head_body = c.response(method="HEAD")
            assert status == 200 and int(headers["content-length"]) == len(body)
            assert head_body == b""
        c.send(b"GET /json HTTP/1.1\r\nHost: a\r\n\r\n")  # the connection is still in step
        assert c.response()[2] == body


def test_interim_1xx_is_forwarded_before_the_final_response(simple_gateway):
    with simple_gateway.raw() as c:
        c.send(b"GET /interim HTTP/1.1\r\nHost: a\r\n\r\n")
        data = b""
        while b'{"final": true}' not in data:
            chunk = c.sock.recv(65536)
            assert chunk
            data += chunk
        assert data.startswith(b"HTTP/1.1 103 Early Hints\r\n")
        assert b"\r\n\r\nHTTP/1.1 200 OK\r\n" in data


def test_expect_100_continue(simple_gateway):
    with simple_gateway.raw() as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n"
               b"Expect: 100-continue\r\n\r\n")
        assert c.fp.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert c.fp.readline() == b"\r\n"
        c.send(b"hello world")
        status, _, body = c.response()
        seen = echo(body)
        assert status == 200 and seen["size"] == 11
        assert header(seen, "expect") is None


def test_chunked_request_and_response(simple_gateway):
    with simple_gateway.raw() as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        status, _, body = c.response()
        seen = echo(body)
        assert status == 200 and seen["size"] == 11
        assert seen["sha256"] == hashlib.sha256(b"hello world").hexdigest()
        c.send(b"GET /bytes?n=300000&chunked=1&chunk=1000 HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, body = c.response()
        assert headers["transfer-encoding"] == "chunked"
        assert hashlib.sha256(body).hexdigest() == pattern_sha256(300000)


def test_read_until_close_response_becomes_chunked_for_http11(simple_gateway):
    with simple_gateway.raw() as c:
        c.send(b"GET /bytes?n=100000&close=1 HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, body = c.response()
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        assert hashlib.sha256(body).hexdigest() == pattern_sha256(100000)
        c.send(b"GET /json HTTP/1.1\r\nHost: a\r\n\r\n")  # the client connection lives on
        assert c.response()[0] == 200


def _upload(gw, size: int, chunked: bool) -> dict:
    """Stream `size` pattern bytes up through the gateway; the upstream's checksum."""
    block = bytes(range(256)) * 256
    with gw.raw(timeout=60) as c:
        framing = b"transfer-encoding: chunked" if chunked else b"content-length: %d" % size
        c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\n%s\r\n\r\n" % framing)
        sent = 0
        while sent < size:
            part = block[: min(len(block), size - sent)]
            c.send(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
            sent += len(part)
        if chunked:
            c.send(b"0\r\n\r\n")
        status, _, body = c.response()
    assert status == 200
    return echo(body)


def test_large_upload_streams_with_flat_memory(upstream, gateway_factory):
    gw = gateway_factory({"services": [service(upstream.url, [{"name": "all", "paths": ["/*"]}])]},
                         env={"FASTGW_MAX_BODY_BYTES": str(2 << 30)})
    size = 256 << 20
    before = gw.rss_kb()
    seen = _upload(gw, size, chunked=False)
    assert seen["size"] == size and seen["sha256"] == pattern_sha256(size)
    seen = _upload(gw, 64 << 20, chunked=True)
    assert seen["size"] == 64 << 20 and seen["sha256"] == pattern_sha256(64 << 20)
    assert gw.rss_kb() - before < 50_000


def test_an_upstream_that_answers_before_the_body_and_resets_is_relayed_not_502(simple_gateway):
    """The upstream answers 413 at once and closes without reading the body, so the kernel
    resets the connection under fastgw's next write: the answer that came first still
    reaches the client, as HAProxy and Envoy relay it, never a 502 in its place."""
    import threading
    size = 6 << 20
    for attempt in range(5):  # before: 502 nearly every time
        with simple_gateway.raw() as conn:
            head = b"POST /early HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size

            def send():
                try:
                    conn.send(head + b"x" * size)
                except OSError:  # reset once fastgw has answered and closed
                    pass
            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            status, _, body = conn.response("POST")
            assert (status, json.loads(body)) == (413, {"early": True}), attempt
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)  # ends a sendall still blocked
            except OSError:  # fastgw has closed the connection already
                pass
            sender.join(10)
            assert not sender.is_alive()


def test_large_download_streams_with_flat_memory(simple_gateway):
    size = 512 << 20
    before = simple_gateway.rss_kb()
    for query in (b"n=%d" % size, b"n=%d&chunked=1" % (64 << 20)):
        with simple_gateway.raw(timeout=60) as c:
            c.send(b"GET /bytes?%s HTTP/1.1\r\nHost: a\r\n\r\n" % query)
            status, headers = c.head()
            assert status.startswith(b"HTTP/1.1 200")
            h = hashlib.sha256()
            if "content-length" in headers:
                left = int(headers["content-length"])
                while left:
                    data = c.fp.read(min(left, 1 << 20))
                    h.update(data)
                    left -= len(data)
                expected = pattern_sha256(size)
            else:
                while (n := int(c.fp.readline(), 16)):
                    h.update(c.fp.read(n))
                    c.fp.readline()
                expected = pattern_sha256(64 << 20)
            assert h.hexdigest() == expected
    assert simple_gateway.rss_kb() - before < 50_000


def test_slow_reader_back_pressure_keeps_memory_flat(simple_gateway):
    size = 256 << 20
    before = simple_gateway.rss_kb()
    with simple_gateway.raw(timeout=60) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.send(b"GET /bytes?n=%d HTTP/1.1\r\nHost: a\r\n\r\n" % size)
        time.sleep(1.0)  # the reader stalls (the stall is the test): the upstream could send
        assert simple_gateway.rss_kb() - before < 50_000  # it all by now; nothing piles up
        status, headers = c.head()
        assert status.startswith(b"HTTP/1.1 200") and int(headers["content-length"]) == size
        received = 0
        while received < size:
            data = c.fp.read1(1 << 20)
            assert data
            received += len(data)
    assert received == size


def test_a_burst_of_new_connections_is_accepted_and_served(simple_gateway):
    """Clients that connect at once all get in (libuv alone takes one per loop turn)."""
    clients = [simple_gateway.raw() for _ in range(300)]
    try:
        for c in clients:
            c.send(b"GET /json HTTP/1.1\r\nHost: api.test\r\n\r\n")
        assert all(c.response()[0] == 200 for c in clients)
    finally:
        for c in clients:
            c.close()


@pytest.mark.parametrize("workers, batch", [("1", 64), ("2", 16), ("64", 1)])
def test_a_connection_accepted_after_a_long_turn_takes_a_bounded_batch(workers, batch):
    """libuv accepts one connection per handle and loop turn, which under load left clients
    in the listen queue for seconds; after a long turn the gateway takes a batch more
    itself, a smaller one when other workers share the queue. A second connection in the
    same turn takes none: a batch costs more per connection than libuv's accept."""
    async def main():
        settings = Settings.load(environ={"FASTGW_WORKERS": workers})
        gateway = Gateway(settings, snapshot_factory(settings))
        listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        listener.setblocking(False)
        gateway.listeners = [listener]
        clients = [socket.create_connection(listener.getsockname()) for _ in range(150)]
        try:
            taken = []
            while len(gateway.connections) < 150:
                await asyncio.sleep(LONG_TURN + 0.001)  # the loop's clock moves on by as much
                gateway._accepted()  # as libuv calls it for each connection it accepts
                gateway._accepted()  # and for another one in the same turn
                while gateway._accepting:
                    await asyncio.wait(list(gateway._accepting))
                taken.append(len(gateway.connections) - sum(taken))
            assert taken == [batch] * (150 // batch) + ([150 % batch] if 150 % batch else [])
            with pytest.raises(BlockingIOError):
                listener.accept()  # nothing left waiting
        finally:
            for conn in list(gateway.connections):
                conn.abort()
            for c in clients:
                c.close()
            listener.close()

    uvloop.run(main())


@pytest.mark.parametrize("workers, handles", [("1", 4), ("16", 2), ("64", 1)])
def test_libuv_takes_a_connection_a_turn_through_each_of_several_handles(workers, handles):
    """Each listening socket is watched through several descriptors, so that libuv takes
    that many connections a loop turn (fewer when other workers share the queue)."""
    async def main():
        loop = asyncio.get_running_loop()
        settings = Settings.load(environ={"FASTGW_WORKERS": workers})
        gateway = Gateway(settings, snapshot_factory(settings))
        gateway.accept_batch = 0  # libuv's accepts only
        turn = 0
        turns = []  # the loop turn in which libuv accepted each connection

        def next_turn():
            nonlocal turn
            turn += 1
            loop.call_soon(next_turn)  # runs once a turn

        factory = gateway._accepted

        def accepted():
            turns.append(turn)
            return factory()

        gateway._accepted = accepted
        listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        await gateway.start([listener])
        clients = [socket.create_connection(listener.getsockname()) for _ in range(40)]
        try:
            next_turn()
            while len(turns) < 40:
                await asyncio.sleep(0)
            assert list(Counter(turns).values()) == [handles] * (40 // handles)
        finally:
            await gateway.shutdown(0)
            for c in clients:
                c.close()

    uvloop.run(main())
