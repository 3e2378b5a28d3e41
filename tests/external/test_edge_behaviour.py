"""The edge behaviour the other suites are written against, one raw case each.

Http11Probe and smuggler cover much of it with their own cases; this table holds the rest
of what fastgw answers at its edge (the Host rule, transfer codings, versions, Upgrade,
identity fields, Connection options, trailers, jwt-auth's refusals), so that every rule
is asserted somewhere by its answer and not only by the invariant. Each case is raw
bytes ("{T}": the consumer's token) and one answer spec per response (see
`answers_mismatch`); the invariant is checked for every one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from .conftest import answers_mismatch

PUB = "Host: public.example\r\n"
PROT = "Host: protected.example\r\nAuthorization: Bearer {T}\r\n"
ADMIN = "GET /admin HTTP/1.1\r\nHost: protected.example\r\n\r\n"  # no token


@dataclass(frozen=True)
class Case:
    id: str
    data: str
    answers: tuple
    body: dict | None = None  # the JSON body of the first response
    deadline: float = 1.0


def case(id, data, *answers, body=None, deadline=1.0):
    return pytest.param(Case(id, data, answers, body, deadline), id=id)


CASES = [
    # the Host rule: host[:port], letters, digits, "-", "." and "_" only, once
    case("host-userinfo", "GET / HTTP/1.1\r\nHost: user@public.example\r\n\r\n", "400+close"),
    case("host-userinfo-other-host",
         "GET / HTTP/1.1\r\nHost: public.example@protected.example\r\n\r\n",
         "400+close"),
    case("host-comma-list", "GET / HTTP/1.1\r\nHost: public.example, protected.example\r\n\r\n",
         "400+close"),
    case("host-port-not-numeric", "GET / HTTP/1.1\r\nHost: public.example:abc\r\n\r\n",
         "400+close"),
    case("host-port-out-of-range", "GET / HTTP/1.1\r\nHost: public.example:99999\r\n\r\n",
         "400+close"),
    case("host-two-ports", "GET / HTTP/1.1\r\nHost: public.example:80:80\r\n\r\n", "400+close"),
    case("host-slash", "GET / HTTP/1.1\r\nHost: public.example/x\r\n\r\n", "400+close"),
    case("host-percent", "GET / HTTP/1.1\r\nHost: public%2eexample\r\n\r\n", "400+close"),
    # an IPv6 literal is a host (RFC 3986 3.2.2), routed like a name: no service has it here
    case("host-ipv6-literal", "GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n", "404"),
    case("host-ipv6-literal-port", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", "404"),
    case("host-twice", f"GET / HTTP/1.1\r\n{PUB}{PUB}\r\n", "400+close"),
    case("host-missing-http11", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", "400+close"),
    case("host-port-routes-on-the-name", "GET / HTTP/1.1\r\nHost: public.example:8080\r\n\r\n",
         "2xx"),
    case("host-any-case-routes", "GET / HTTP/1.1\r\nHost: PUBLIC.Example\r\n\r\n", "2xx"),
    # trailing whitespace after the value is not part of it
    case("host-trailing-spaces-route", "GET / HTTP/1.1\r\nHost: public.example  \r\n\r\n", "2xx"),
    case("host-trailing-tab-routes", "GET / HTTP/1.1\r\nHost: public.example\t\r\n\r\n", "2xx"),
    # absolute-form: the target's authority is the host, the Host field is then ignored
    case("absolute-form-authority-wins", "GET http://public.example/a HTTP/1.1\r\n"
         "Host: protected.example\r\n\r\n", "2xx"),
    case("absolute-form-to-protected-needs-a-token", "GET http://protected.example/a HTTP/1.1\r\n"
         f"{PUB}\r\n", "401", body={"message": "Missing JWT token in request"}),
    case("absolute-form-authority-userinfo",
         f"GET http://user@public.example/ HTTP/1.1\r\n{PUB}\r\n",
         "400+close"),
    case("absolute-form-authority-bad-port", f"GET http://public.example:x/ HTTP/1.1\r\n{PUB}\r\n",
         "400+close"),
    case("absolute-form-authority-ipv6", f"GET http://[::1]/ HTTP/1.1\r\n{PUB}\r\n", "404"),
    # bare LF or CR anywhere in the request line or the fields
    case("bare-lf-ending-the-head", f"GET / HTTP/1.1\r\n{PUB}X-A: 1\n\r\n", "400+close"),
    case("bare-lf-only", "GET / HTTP/1.1\nHost: public.example\n\n", "400+close"),
    case("bare-cr-in-value", f"GET / HTTP/1.1\r\n{PUB}X-A: a\rb\r\n\r\n", "400+close"),
    case("bare-cr-in-target", f"GET /a\rb HTTP/1.1\r\n{PUB}\r\n", "400+close"),
    # a request line needs a version
    case("http09-style-line", "GET /a\r\n\r\n", "400+close"),
    # Content-Length: one, plain digits
    case("content-length-twice-same-value", f"POST / HTTP/1.1\r\n{PUB}Content-Length: 5\r\n"
         "Content-Length: 5\r\n\r\nhello", "400+close"),
    case("content-length-and-chunked-http11", f"POST / HTTP/1.1\r\n{PUB}Content-Length: 5\r\n"
         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400+close"),
    case("control-char-del", f"GET / HTTP/1.1\r\n{PUB}X-A: a\x7fb\r\n\r\n", "400+close"),
    case("control-char-soh", f"GET / HTTP/1.1\r\n{PUB}X-A: a\x01b\r\n\r\n", "400+close"),
    case("whitespace-before-colon", f"GET / HTTP/1.1\r\n{PUB}X-A : 1\r\n\r\n", "400+close"),
    case("obs-fold", f"GET / HTTP/1.1\r\n{PUB}X-A: 1\r\n\t2\r\n\r\n", "400+close"),
    # Transfer-Encoding in HTTP/1.0: answered, then the connection closed
    case("http10-chunked", f"POST / HTTP/1.0\r\n{PUB}Transfer-Encoding: chunked\r\n\r\n"
         "5\r\nhello\r\n0\r\n\r\n", "400+close"),
    case("http10-chunked-keep-alive", f"POST / HTTP/1.0\r\n{PUB}Connection: keep-alive\r\n"
         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
         "GET / HTTP/1.0\r\n" + PUB + "\r\n", "400+close"),
    # the credential field of jwt-auth given twice
    case("authorization-twice", "GET / HTTP/1.1\r\n" + PROT + "Authorization: Bearer {T}\r\n\r\n",
         "400+close"),
    case("authorization-twice-one-empty", "GET / HTTP/1.1\r\n" + PROT + "Authorization: \r\n\r\n",
         "400+close"),
    # transfer codings other than a single chunked: 501 (some may be 400)
    case("coding-gzip-chunked", f"POST / HTTP/1.1\r\n{PUB}Transfer-Encoding: gzip, chunked\r\n\r\n"
         "0\r\n\r\n", "400+close|501+close"),
    case("coding-identity", f"POST / HTTP/1.1\r\n{PUB}Transfer-Encoding: identity\r\n\r\n",
         "400+close|501+close"),
    case("coding-chunked-chunked",
         f"POST / HTTP/1.1\r\n{PUB}Transfer-Encoding: chunked, chunked\r\n"
         "\r\n0\r\n\r\n", "400+close|501+close"),
    case("coding-br", f"POST / HTTP/1.1\r\n{PUB}Transfer-Encoding: br\r\n\r\n", "501+close"),
    case("coding-unknown", f"POST / HTTP/1.1\r\n{PUB}Transfer-Encoding: x-custom\r\n\r\n",
         "501+close"),
    case("coding-two-fields", f"POST / HTTP/1.1\r\n{PUB}Transfer-Encoding: gzip\r\n"
         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400+close|501+close"),
    # versions
    case("http20-request-line", f"GET / HTTP/2.0\r\n{PUB}\r\n", "505"),
    case("http30-request-line", f"GET / HTTP/3.0\r\n{PUB}\r\n", "505"),
    case("http12-request-line", f"GET / HTTP/1.2\r\n{PUB}\r\n", "505"),  # only 1.0, 1.1 served
    # Upgrade: never switched; with a body answered promptly, or served with all of it
    case("upgrade-h2c-no-body", f"GET / HTTP/1.1\r\n{PUB}Connection: Upgrade, HTTP2-Settings\r\n"
         "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", "2xx+close",
         deadline=2.0),
    case("upgrade-h2c-content-length-body", f"POST / HTTP/1.1\r\n{PUB}Connection: upgrade\r\n"
         "Upgrade: h2c\r\nContent-Length: 5\r\n\r\nhello", "400+close|501+close|2xx", deadline=2.0),
    case("upgrade-h2c-chunked-body", f"POST / HTTP/1.1\r\n{PUB}Connection: upgrade\r\n"
         "Upgrade: h2c\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
         "400+close|501+close|2xx", deadline=2.0),
    case("upgrade-protected-with-body", "POST / HTTP/1.1\r\n" + PROT + "Connection: upgrade\r\n"
         "Upgrade: websocket\r\nContent-Length: 5\r\n\r\nhello", "400+close|501+close|2xx",
         deadline=2.0),
    case("upgrade-then-pipelined", f"GET / HTTP/1.1\r\n{PUB}Connection: upgrade\r\nUpgrade: h2c\r\n"
         f"\r\nGET /second HTTP/1.1\r\n{PUB}\r\n", "2xx+close", deadline=2.0),
    # identity and forwarding fields fastgw sets: removed in every spelling
    *(case(f"identity-{name}", "GET / HTTP/1.1\r\n" + PROT + f"{name}: admin\r\n\r\n", "2xx")
      for name in ("X-Consumer-Username", "x_consumer_username", "X_CONSUMER_USERNAME",
                   "X-Credential-Identifier", "x_credential_identifier", "X_Forwarded_For",
                   "X-Real-IP", "X_Real_IP", "x-real_ip", "X_Forwarded_Host", "X_Forwarded_Proto")),
    case("identity-on-public", f"GET / HTTP/1.1\r\n{PUB}X_Consumer_Username: admin\r\n"
         "X-Credential-Identifier: admin-key\r\n\r\n", "2xx"),
    case("forwarded-host-and-proto-spoofed", f"GET / HTTP/1.1\r\n{PUB}X-Forwarded-Host: evil\r\n"
         "X-Forwarded-Proto: https\r\n\r\n", "2xx"),
    # Connection options never remove fastgw's framing or its own fields
    case("connection-content-length", f"POST / HTTP/1.1\r\n{PUB}Content-Length: 5\r\n"
         "Connection: content-length\r\n\r\nhello", "2xx"),
    case("connection-content-length-smuggles", "POST / HTTP/1.1\r\n" + PROT +
         f"Content-Length: {len(ADMIN)}\r\nConnection: content-length\r\n\r\n{ADMIN}", "2xx"),
    case("connection-transfer-encoding", f"POST / HTTP/1.1\r\n{PUB}Transfer-Encoding: chunked\r\n"
         "Connection: transfer-encoding\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "2xx"),
    case("connection-host", f"GET / HTTP/1.1\r\n{PUB}Connection: host\r\n\r\n", "2xx"),
    case("connection-x-consumer-username", "GET / HTTP/1.1\r\n" + PROT +
         "Connection: x-consumer-username, x-credential-identifier\r\n\r\n", "2xx"),
    case("connection-x-forwarded-for", f"GET / HTTP/1.1\r\n{PUB}Connection: x-forwarded-for, "
         "x-real-ip\r\n\r\n", "2xx"),
    # request trailers are dropped
    case("trailer-identity", "POST / HTTP/1.1\r\n" + PROT + "Transfer-Encoding: chunked\r\n\r\n"
         "5\r\nhello\r\n0\r\nX-Consumer-Username: admin\r\n\r\n", "2xx"),
    case("trailer-credential-on-public",
         f"POST / HTTP/1.1\r\n{PUB}Transfer-Encoding: chunked\r\n\r\n"
         "5\r\nhello\r\n0\r\nAuthorization: Bearer {T}\r\n\r\n", "2xx"),
    case("trailer-token-does-not-authorize", "POST / HTTP/1.1\r\nHost: protected.example\r\n"
         "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nAuthorization: Bearer {T}\r\n\r\n",
         "401", body={"message": "Missing JWT token in request"}),
    case("trailer-pipelined-behind-a-slow-head", f"POST /one HTTP/1.1\r\n{PUB}Content-Length: 0\r\n"
         f"\r\nPOST /two HTTP/1.1\r\n{PUB}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
         "X-Trailer: 1\r\n\r\n", "2xx", "2xx"),
    # jwt-auth's refusals
    case("no-token", "GET / HTTP/1.1\r\nHost: protected.example\r\n\r\n", "401",
         body={"message": "Missing JWT token in request"}),
    case("garbled-token", "GET / HTTP/1.1\r\nHost: protected.example\r\nAuthorization: x.y\r\n\r\n",
         "401", body={"message": "JWT token invalid"}),
    case("token-then-pipelined-without", "GET /a HTTP/1.1\r\n" + PROT + "\r\nGET /b HTTP/1.1\r\n"
         "Host: protected.example\r\n\r\n", "2xx", "401"),
]


@pytest.mark.parametrize("edge_case", CASES)
def test_edge_behaviour(edge, edge_case):
    ex = edge.exchange(edge_case.data.replace("{T}", edge.token).encode("latin-1"),
                       deadline=edge_case.deadline)
    problems = [f"invariant: {p}" for p in edge.violations(ex)]
    mismatch = answers_mismatch(edge_case.answers, ex)
    if mismatch:
        problems.append(f"answer: {mismatch} (expected {' then '.join(edge_case.answers)})")
    elif edge_case.body is not None and json.loads(ex.responses[0].body) != edge_case.body:
        problems.append(f"body {ex.responses[0].body!r}, expected {edge_case.body}")
    if problems:
        pytest.fail("\n- ".join([f"{edge_case.id}:"] + problems) + "\n" + ex.describe(),
                    pytrace=False)
