"""The edge under attack: what a client may send, and what the upstream then sees.

Each test sends raw bytes, as an attacker would, to a gateway with an open route and a
jwt-auth route on the test upstream, then checks the answer and the upstream's own record
of what arrived (`upstream.requests`). A request the client did not send as one, a header
fastgw never saw as one, or an unverified request on the protected route is a failure,
whatever the client got back.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
import uuid

import jwt as pyjwt
import pytest

from conftest import service

SECRET = "edge-secret-" + "0123456789abcdef" * 3


@pytest.fixture
def edge(upstream, gateway_factory):
    routes = [{"name": "open", "paths": ["/open/*"]},
              {"name": "locked", "paths": ["/locked/*"], "plugins": {"jwt-auth": {}}}]
    return gateway_factory({
        "services": [service(upstream.url, routes, hosts=["public.example"], name="public"),
                     service(upstream.url, [{"name": "all", "paths": ["/*"],
                                             "plugins": {"jwt-auth": {}}}],
                             hosts=["protected.example"], name="protected")],
        "consumers": [{"username": "jack", "credentials": [{"key": "jack-key",
                                                            "secret": SECRET}]}]})


def marker() -> str:
    return uuid.uuid4().hex


def seen(upstream, mark: str) -> list[dict]:
    """The upstream's records of requests whose target holds `mark`."""
    return [r for r in upstream.requests if mark in r["target"]]


def headers_of(record: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in record["headers"]:
        out.setdefault(name, []).append(value)
    return out


def exchange(gw, data: bytes, timeout: float = 5) -> tuple[int, dict, bytes]:
    """Send `data` on a new connection; the first response."""
    with gw.raw(timeout) as c:
        c.send(data)
        return c.response()


def wait_for_record(upstream, mark: str, timeout: float = 5) -> dict:
    deadline = time.monotonic() + timeout
    while not seen(upstream, mark):
        assert time.monotonic() < deadline, f"the upstream never saw {mark}"
        time.sleep(0.01)
    return seen(upstream, mark)[0]


def token() -> str:
    return pyjwt.encode({"key": "jack-key"}, SECRET, algorithm="HS256")


# ---------------------------------------------------------------- 1. framing is fastgw's

@pytest.mark.parametrize("option", ["content-length", "Content-Length", "CONTENT-LENGTH",
                                    "keep-alive, content-length", "transfer-encoding",
                                    "host", "x-consumer-username"])
def test_a_connection_option_never_removes_framing_so_nothing_is_smuggled(edge, upstream,
                                                                        option):
    mark, smuggled = marker(), marker()
    inner = b"GET /locked/%s HTTP/1.1\r\nHost: public.example\r\n\r\n" % smuggled.encode()
    status, _, body = exchange(edge, b"POST /open/%s HTTP/1.1\r\nHost: public.example\r\n"
                                     b"Connection: %s\r\nContent-Length: %d\r\n\r\n%s"
                               % (mark.encode(), option.encode(), len(inner), inner))
    assert status == 200
    record = json.loads(body)
    assert record["size"] == len(inner)  # the body arrived as a body
    assert headers_of(record)["content-length"] == [str(len(inner))]
    assert headers_of(record)["host"] == ["public.example"]
    # a second look after the upstream had time to parse anything left over
    assert exchange(edge, b"GET /open/%s-after HTTP/1.1\r\nHost: public.example\r\n\r\n"
                    % mark.encode())[0] == 200
    assert seen(upstream, smuggled) == []


def test_the_upstream_gets_fastgws_own_content_length_spelling(edge, upstream):
    mark = marker()
    status, _, body = exchange(edge, b"POST /open/%s HTTP/1.1\r\nHost: public.example\r\n"
                                     b"Content-Length: 005\r\n\r\nhello" % mark.encode())
    assert status == 200
    assert headers_of(json.loads(body))["content-length"] == ["5"]


# ---------------------------------------------------------------- 2. trailers

def test_request_trailers_never_reach_the_upstream_head(edge, upstream):
    mark = marker()
    status, _, body = exchange(
        edge, b"POST /open/%s HTTP/1.1\r\nHost: public.example\r\nTransfer-Encoding: chunked"
              b"\r\n\r\n5\r\nhello\r\n0\r\nAuthorization: forged\r\nX-Consumer-Username: admin"
              b"\r\nX-Trailer: 1\r\n\r\n" % mark.encode())
    assert status == 200
    record = json.loads(body)
    names = {n for n, _ in record["headers"]}
    assert record["size"] == 5
    assert not names & {"authorization", "x-consumer-username", "x-trailer"}


def test_request_trailers_are_not_carried_into_the_next_request(edge, upstream):
    mark = marker()
    with edge.raw(5) as c:
        c.send(b"POST /open/%s-1 HTTP/1.1\r\nHost: public.example\r\nTransfer-Encoding: chunked"
               b"\r\n\r\n5\r\nhello\r\n0\r\nHost: public.example\r\nX-Trailer: 1\r\n\r\n"
               b"GET /open/%s-2 HTTP/1.1\r\n\r\n" % (mark.encode(), mark.encode()))
        assert c.response()[0] == 200
        assert c.response()[0] == 400  # no Host of its own: the trailer's is not one
    assert [r["target"] for r in seen(upstream, mark)] == [f"/open/{mark}-1"]


# ---------------------------------------------------------------- 3. Host

@pytest.mark.parametrize("host", [
    b"public.example:x@protected.example", b"public.example@protected.example",
    b"public.example, protected.example", b"public.example:80x", b"public.example:65536",
    b"public.example:", b"public.example/protected.example", b"public.example\\x",
    b"public example", b"public.example%2f", b"", b" ",
])
def test_a_host_that_is_not_host_and_port_is_400(edge, upstream, host):
    mark = marker()
    status, headers, _ = exchange(edge, b"GET /open/%s HTTP/1.1\r\nHost: %s\r\n\r\n"
                                  % (mark.encode(), host))
    assert status == 400 and headers["connection"] == "close"
    assert seen(upstream, mark) == []


@pytest.mark.parametrize("target", [
    b"http://public.example:x@protected.example/open/", b"http://u@protected.example/open/",
    b"http://public.example,protected.example/open/", b"http:///open/",
])
def test_an_absolute_form_authority_that_is_not_host_and_port_is_400(edge, upstream, target):
    mark = marker()
    status, _, _ = exchange(edge, b"GET %s%s HTTP/1.1\r\nHost: public.example\r\n\r\n"
                            % (target, mark.encode()))
    assert status == 400
    assert seen(upstream, mark) == []


def test_the_absolute_form_authority_is_both_routed_on_and_forwarded(edge, upstream):
    mark = marker()
    status, _, _ = exchange(edge, b"GET http://protected.example/open/%s HTTP/1.1\r\n"
                                  b"Host: public.example\r\n\r\n" % mark.encode())
    assert status == 401  # the protected service, whatever the Host header says
    status, _, body = exchange(edge, b"GET http://PUBLIC.example:80/open/%s HTTP/1.1\r\n"
                                     b"Host: protected.example\r\n\r\n" % mark.encode())
    assert status == 200
    assert headers_of(json.loads(body))["host"] == ["PUBLIC.example:80"]


def test_trailing_whitespace_and_a_trailing_dot_are_not_part_of_the_host(edge, upstream):
    mark = marker()
    status, _, body = exchange(edge, b"GET /open/%s HTTP/1.1\r\nHost: public.example \t\r\n\r\n"
                               % mark.encode())
    assert status == 200
    assert headers_of(json.loads(body))["host"] == ["public.example"]
    # "protected.example." is the protected host to any resolver: routed and sent as such
    status, _, _ = exchange(edge, b"GET /open/%s HTTP/1.1\r\nHost: protected.example.\r\n\r\n"
                            % mark.encode())
    assert status == 401
    status, _, body = exchange(edge, b"GET /open/%s HTTP/1.1\r\nHost: public.example.:80\r\n"
                                     b"\r\n" % mark.encode())
    assert status == 200
    assert headers_of(json.loads(body))["host"] == ["public.example:80"]


# ---------------------------------------------------------------- 4. the request line

@pytest.mark.parametrize("line", [
    b"GET /open/%s\nX-Injected: 1 HTTP/1.1", b"GET /open/%s", b"GET /open/%s HTTP/0.9",
])
def test_a_request_line_without_a_crlf_framed_version_is_400(edge, upstream, line):
    mark = marker()
    status, _, _ = exchange(edge, line % mark.encode() + b"\r\nHost: public.example\r\n\r\n")
    assert status == 400
    assert seen(upstream, mark) == []


@pytest.mark.parametrize("version", [b"2.0", b"3.0", b"9.9", b"1.2"])
def test_a_version_other_than_1_0_and_1_1_is_505(edge, upstream, version):
    mark = marker()
    status, headers, body = exchange(edge, b"GET /open/%s HTTP/%s\r\nHost: public.example"
                                           b"\r\n\r\n" % (mark.encode(), version))
    assert status == 505 and headers["connection"] == "close"
    assert json.loads(body) == {"error_msg": "505 HTTP Version Not Supported"}
    assert seen(upstream, mark) == []


# ---------------------------------------------------------------- 5. transfer codings

@pytest.mark.parametrize("coding,status", [
    (b"gzip, chunked", 501), (b"deflate,chunked", 501), (b"x, chunked", 501), (b"gzip", 501),
    (b"chunked, gzip", 400),  # RFC 9112 6.3: chunked not last, the length is unknown
    (b"chunked, chunked", 400),  # llhttp: chunked twice is not a length it can trust
])
def test_a_transfer_coding_other_than_chunked_is_501(edge, upstream, coding, status):
    mark = marker()
    with edge.raw(5) as c:
        c.send(b"POST /open/%s HTTP/1.1\r\nHost: public.example\r\nTransfer-Encoding: %s\r\n\r\n"
               b"5\r\nhello\r\n0\r\n\r\n" % (mark.encode(), coding))
        answer, headers, _ = c.response()
        assert answer == status and headers["connection"] == "close"
        assert c.closed()
    assert seen(upstream, mark) == []


def test_transfer_encoding_in_http10_is_answered_400_then_closed(edge, upstream):
    mark = marker()
    with edge.raw(5) as c:
        c.send(b"POST /open/%s HTTP/1.0\r\nHost: public.example\r\nTransfer-Encoding: chunked"
               b"\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /open/%s-2 HTTP/1.0\r\n\r\n"
               % (mark.encode(), mark.encode()))
        status, _, _ = c.response()
        assert status == 400
        assert c.closed()
    assert seen(upstream, mark) == []


# ---------------------------------------------------------------- 6. Upgrade

def test_an_upgrade_request_with_a_body_is_answered_at_once(edge, upstream):
    mark = marker()
    started = time.monotonic()
    with edge.raw(5) as c:
        c.send(b"POST /open/%s HTTP/1.1\r\nHost: public.example\r\nConnection: upgrade\r\n"
               b"Upgrade: h2c\r\nContent-Length: 5\r\n\r\nhello" % mark.encode())
        status, headers, _ = c.response()
        assert status == 501 and headers["connection"] == "close"
        assert c.closed()
    assert time.monotonic() - started < 2
    assert seen(upstream, mark) == []


def test_an_upgrade_request_without_a_body_is_served_without_the_upgrade(edge, upstream):
    mark = marker()
    with edge.raw(5) as c:
        c.send(b"GET /open/%s HTTP/1.1\r\nHost: public.example\r\nConnection: upgrade\r\n"
               b"Upgrade: websocket\r\n\r\n" % mark.encode())
        status, headers, body = c.response()
        assert status == 200 and headers["connection"] == "close"
        assert "upgrade" not in headers_of(json.loads(body))
        assert c.closed()


# ---------------------------------------------------------------- 8. headers fastgw sets

@pytest.mark.parametrize("name", [b"X_Consumer_Username", b"x_consumer-username",
                                  b"X-CONSUMER_USERNAME", b"X_Credential_Identifier",
                                  b"X_Real_IP", b"X_Forwarded_Proto", b"x_forwarded_host"])
def test_a_header_fastgw_sets_is_removed_in_every_spelling(edge, upstream, name):
    mark = marker()
    status, _, body = exchange(edge, b"GET /locked/%s HTTP/1.1\r\nHost: public.example\r\n"
                                     b"Authorization: %s\r\n%s: forged\r\n\r\n"
                               % (mark.encode(), token().encode(), name))
    assert status == 200
    values = [v for _, v in json.loads(body)["headers"]]
    assert "forged" not in values
    assert headers_of(json.loads(body))["x-consumer-username"] == ["jack"]


def test_a_request_refused_mid_pipeline_ends_the_connection_there(edge, upstream):
    mark = marker()
    with edge.raw(5) as c:
        c.send(b"GET /open/%s-1 HTTP/1.1\r\nHost: public.example\r\n\r\n"
               b"GET /open/%s-2 HTTP/1.1\r\nHost: a@b\r\n\r\n"
               b"GET /open/%s-3 HTTP/1.1\r\nHost: public.example\r\n\r\n"
               % (mark.encode(), mark.encode(), mark.encode()))
        assert c.response()[0] == 200
        assert c.response()[0] == 400
        assert c.closed()
    assert [r["target"] for r in seen(upstream, mark)] == [f"/open/{mark}-1"]


@pytest.mark.parametrize("framing,body", [(b"Content-Length: 10", b"hello"),
                                          (b"Transfer-Encoding: chunked", b"5\r\nhello\r\n")])
def test_a_request_cut_off_mid_body_is_answered_and_never_left_half_sent(edge, upstream,
                                                                         framing, body):
    mark = marker()
    with edge.raw(5) as c:
        c.send(b"POST /open/%s HTTP/1.1\r\nHost: public.example\r\n%s\r\n\r\n%s"
               % (mark.encode(), framing, body))
        c.sock.shutdown(socket.SHUT_WR)  # the rest of the body will never come
        status, headers, _ = c.response()
        assert status == 400 and headers["connection"] == "close"
        assert c.closed()
    assert seen(upstream, mark) == []


def test_the_gateways_own_answer_to_head_has_no_body(edge, upstream):
    """A 401 or 404 to HEAD is its head alone; its body would be read as the next response."""
    with edge.raw(5) as c:
        c.send(b"HEAD /locked/x HTTP/1.1\r\nHost: public.example\r\n\r\n"
               b"HEAD /nowhere HTTP/1.1\r\nHost: nowhere.example\r\n\r\n"
               b"GET /locked/x HTTP/1.1\r\nHost: public.example\r\n\r\n")
        status, headers, body = c.response("HEAD")
        assert (status, body) == (401, b"") and headers["content-length"] == "42"
        status, _, body = c.response("HEAD")
        assert (status, body) == (404, b"")
        status, _, body = c.response()
        assert status == 401 and json.loads(body) == {"message": "Missing JWT token in request"}


def test_absolute_form_without_host_in_http11_is_400(edge, upstream):
    mark = marker()
    status, _, _ = exchange(edge, b"GET http://public.example/open/%s HTTP/1.1\r\n\r\n"
                            % mark.encode())
    assert status == 400
    assert seen(upstream, mark) == []


def test_options_asterisk_is_a_request_no_route_matches(edge, upstream):
    """RFC 9112 3.2.4's asterisk-form is valid HTTP (it was 400): a request for the server
    as a whole (RFC 9110 9.3.7), which no route's path ("/...") matches, so SPEC 3's 404;
    the connection stays open. Any other method with "*", or no Host in 1.1, stays 400."""
    with edge.raw() as c:
        c.send(b"OPTIONS * HTTP/1.1\r\nHost: public.example\r\n\r\n"
               b"OPTIONS * HTTP/1.0\r\n\r\n")
        status, headers, body = c.response()
        assert (status, json.loads(body)) == (404, {"error_msg": "404 Route Not Found"})
        assert headers["connection"] == "keep-alive"
        assert c.response()[0] == 404
    assert exchange(edge, b"GET * HTTP/1.1\r\nHost: public.example\r\n\r\n")[0] == 400
    assert exchange(edge, b"OPTIONS * HTTP/1.1\r\n\r\n")[0] == 400


def test_connect_is_refused_whatever_its_target_and_body(edge, upstream):
    """llhttp hands over no body after a CONNECT (it is a protocol switch): relayed, its
    Content-Length would frame the next request on that upstream connection."""
    for body in (b"hello", b""):
        mark = marker()
        status, headers, _ = exchange(edge, b"CONNECT /open/%s HTTP/1.1\r\nHost: public.example"
                                            b"\r\nContent-Length: %d\r\n\r\n%s"
                                      % (mark.encode(), len(body), body))
        assert status == 501 and headers["connection"] == "close"
        assert seen(upstream, mark) == []


class DroppingUpstream:
    """Answers every request, except the second one on its first connection: read whole,
    then the connection is closed unanswered (a keep-alive connection at its limit)."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.heads: list[bytes] = []
        self.second_head = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        for number in itertools.count(1):
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn, number):
        data, served = b"", 0
        with conn:
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, data = data.split(b"\r\n\r\n", 1)
                self.heads.append(head)
                length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), b"0"))
                served += 1
                if number == 1 and served == 2:
                    self.second_head.set()
                while len(data) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                data = data[length:]
                if number == 1 and served == 2:
                    return  # closed, unanswered
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")


def test_a_request_whose_body_went_upstream_is_never_sent_again(gateway_factory):
    """A retry on a fresh connection would carry the head and Content-Length but not the
    body already streamed: the next request relayed there would be read as that body."""
    up = DroppingUpstream()
    gw = gateway_factory({"services": [service(
        f"http://127.0.0.1:{up.port}", [{"name": "all", "paths": ["/*"]}],
        upstream={"retries": 1, "timeout": {"connect": 5, "send": 5, "read": 3}})]})
    with gw.raw(10) as c:
        c.send(b"GET /warm HTTP/1.1\r\nHost: a\r\n\r\n")
        assert c.response()[0] == 200
        c.send(b"PUT /put HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
        assert up.second_head.wait(5)  # the head went upstream; now its body follows it
        c.send(b"hello")
        status, _, _ = c.response()
    assert status == 502
    assert [h.split(b" ", 2)[:2] for h in up.heads] == [[b"GET", b"/warm"], [b"PUT", b"/put"]]


def test_connection_close_is_said_on_the_last_answer_only(edge, upstream):
    """Requests pipelined before a malformed one get their answers, and only the last
    answer says close: a client drops whatever follows a "connection: close"."""
    with edge.raw(5) as c:
        c.send(b"GET /nowhere HTTP/1.1\r\nHost: nowhere.example\r\n\r\n"
               b"GET /locked/x HTTP/1.1\r\nHost: public.example\r\nExpect: 100-continue \r\n"
               b"\r\nGARBAGE\r\n\r\n")
        answers = [c.response() for _ in range(3)]
        assert [(status, headers["connection"]) for status, headers, _ in answers] == [
            (404, "keep-alive"), (401, "keep-alive"), (400, "close")]  # 401, not 417: OWS
        assert c.closed()
