"""The gateway's promise, checked after every raw exchange: `check_invariant`.

What the client sent is decided by a reference parser, not by fastgw: h11 reads the
bytes the client actually wrote (`reference_requests`), one request at a time,
ignoring the empty lines RFC 9112 section 2.2 lets a server skip before a request
line, and refusing the framing RFC 9112 section 6 calls faulty (Content-Length with
Transfer-Encoding; Transfer-Encoding in HTTP/1.0), which h11 itself would read as
chunked. Against that, every exchange must satisfy:

* each client request the gateway answered 2xx reached the upstream exactly once,
  with the same method, path (dot segments may be resolved, as routing does), query
  and body, on the service its host routes to, with that host as Host;
* a request the gateway answered itself (4xx/5xx) never reached the upstream, and the
  upstream saw no request that no 2xx accounts for (no smuggling, no split requests, no
  bytes that start one); a request whose head went upstream before the gateway found
  the client's body broken may arrive cut off (only when some client request was
  refused), never completed, and never left half sent once the client has gone;
* a 2xx is never given to bytes the reference parser rejects, and the gateway never
  answers more requests than the client sent;
* on `protected`, every upstream request carries exactly one `x-consumer-username`
  set by fastgw for a valid token, the credential the gateway verified and nothing
  else claiming an identity; on `public`, no identity header at all;
* the upstream framing is fastgw's own: h11 accepts every byte, at most one of
  Content-Length / Transfer-Encoding and only `chunked`, a Content-Length that is the
  body's length as a plain number, no other field that reads as one of them once "_" is
  taken for "-", exactly one Host, no Upgrade, no trailers, no client trailer in the head;
* forwarding headers are fastgw's, in every spelling: one each of X-Real-IP and
  X-Forwarded-For ending in the client's address (a client's list may be extended),
  X-Forwarded-Proto, X-Forwarded-Host equal to Host;
* every complete client request is answered, or the connection closed, in time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import h11

MAX_EVENT = 1 << 24  # as large as any head a test sends: the reference has no size limit

IDENTITY = (b"x-consumer-username", b"x-credential-identifier")
FRAMING = (b"content-length", b"transfer-encoding")
FORWARDING = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-real-ip")
AMBIGUOUS = "ambiguous"  # a credential given more than once


def normalized_name(name: bytes) -> bytes:
    """The header name a lenient reader maps `name` to: any case, "_" read as "-"."""
    return name.lower().replace(b"_", b"-")


def host_and_port(value: str) -> tuple[str, str]:
    """A Host value's name (lower-case, without a trailing dot, which names the same host to
    every resolver) and its port, "" when it has none."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end], value[end + 2:]
    name, _, port = value.partition(":")
    return name.rstrip("."), port


def host_name(value: str) -> str:
    """A Host value's name: the routing key."""
    return host_and_port(value)[0]


def normal_form(path: str) -> str:
    """RFC 3986 6.2.2 on a path: percent-encoded unreserved characters decoded, other
    escapes upper-cased, runs of "/" made one (as routing does), dot segments removed."""
    def escape(match: re.Match) -> str:
        char = chr(int(match[1], 16))
        return char if char.isascii() and (char.isalnum() or char in "-._~") else \
            "%" + match[1].upper()
    return remove_dot_segments(re.sub("/{2,}", "/", re.sub("%([0-9A-Fa-f]{2})", escape, path)))


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, "%2e" read as "." (what routing may do to a path)."""
    path = re.sub("%2[eE]", ".", path)
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
        elif seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


def split_target(target: str) -> tuple[str | None, str, str]:
    """(authority or None, path, query) of an origin-form or absolute-form target."""
    absolute = re.match(r"(?i)https?://([^/?#]*)(.*)", target)
    authority, rest = (absolute.group(1), absolute.group(2) or "/") if absolute else (None, target)
    path, _, query = rest.partition("?")
    return authority, path, query


def credential(headers: list[tuple[bytes, bytes]], target: str, header=b"authorization",
               param="jwt", cookie="jwt") -> tuple[str, str] | None:
    """Where jwt-auth finds the token (SPEC section 4: header, then query, then cookie;
    the first place present is the only one read): ("header"|"query"|"cookie", token)."""
    values = [v for n, v in headers if n.lower() == header]
    if len(values) > 1:
        return "header", AMBIGUOUS
    if values and values[0].strip():
        token = values[0].decode("latin-1").strip()
        if token[:7].lower() == "bearer ":
            token = token[7:].strip()
        return "header", token
    _, _, query = split_target(target)
    found = [v for k, _, v in (p.partition("=") for p in query.split("&")) if k == param]
    if found:
        return "query", found[0] if len(found) == 1 else AMBIGUOUS
    for name, value in headers:
        if name.lower() == b"cookie":
            for pair in value.decode("latin-1").split(";"):
                k, _, v = pair.strip().partition("=")
                if k == cookie:
                    return "cookie", v
    return None


def connection_options(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    return {t.strip().lower() for n, v in headers if n.lower() == b"connection"
            for t in v.split(b",") if t.strip()}


# ---------------------------------------------------------------- what the client sent

@dataclass
class ClientRequest:
    method: str
    target: str
    version: str
    headers: list[tuple[bytes, bytes]]  # names lower-case, values without OWS (h11's)
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def values(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n == name]

    @property
    def host(self) -> str | None:
        """The host the request names: absolute-form's authority, else its Host field."""
        authority, _, _ = split_target(self.target)
        if authority is not None:
            return authority
        hosts = self.values(b"host")
        return hosts[0].decode("latin-1") if len(hosts) == 1 else None

    @property
    def keep_alive(self) -> bool:
        options = connection_options(self.headers)
        if self.version == "1.0":
            return b"keep-alive" in options
        return b"close" not in options


@dataclass
class Reference:
    requests: list[ClientRequest]
    error: str | None = None  # the reference parser refused the bytes after `requests`
    incomplete: bool = False  # bytes after `requests` that do not yet make a request
    stopped: str | None = None  # why bytes after `requests` are not requests: close, upgrade
    rest: bytes = b""  # the bytes after `requests`

    def method(self, i: int) -> str:
        """The method of request i, or a guess from the bytes the reference refused (so that
        a client can tell a response to HEAD)."""
        if i < len(self.requests):
            return self.requests[i].method
        return self.rest.lstrip(b"\r\n").split(b" ", 1)[0].decode("latin-1")


def reference_requests(data: bytes) -> Reference:
    """The requests a strict HTTP/1.1 server reads from `data`, in order."""
    requests: list[ClientRequest] = []
    rest = data
    while True:
        while rest[:2] == b"\r\n":  # RFC 9112 2.2: empty lines before a request line
            rest = rest[2:]
        if not rest:
            return Reference(requests)
        unread = rest
        parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_EVENT)
        parser.receive_data(_single_spaced(rest))
        request = None
        try:
            while True:
                event = parser.next_event()
                if event is h11.NEED_DATA:
                    return Reference(requests, incomplete=True, rest=unread)
                if isinstance(event, h11.Request):
                    request = ClientRequest(event.method.decode("latin-1"),
                                            event.target.decode("latin-1"),
                                            event.http_version.decode("latin-1"),
                                            list(event.headers))
                    faulty = _faulty_framing(request)
                    if faulty:
                        return Reference(requests, error=faulty, rest=unread)
                elif isinstance(event, h11.Data):
                    request.body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    request.trailers = list(event.headers)
                    break
        except h11.RemoteProtocolError as exc:
            return Reference(requests, error=str(exc), rest=unread)
        requests.append(request)
        rest = bytes(parser.trailing_data[0])
        if parser.their_state is h11.MIGHT_SWITCH_PROTOCOL:
            # served without the upgrade, and the connection closed after it
            return Reference(requests, stopped="upgrade" if rest else None, rest=rest)
        if not request.keep_alive:
            return Reference(requests, stopped="close" if rest else None, rest=rest)


_REQUEST_LINE_SPACES = re.compile(rb"\A([!-~]+) +([!-~]+) +(HTTP/[0-9.]+\r\n)")


def _single_spaced(data: bytes) -> bytes:
    """`data` with runs of spaces between the request line's three parts made single: RFC
    9112 3 lets a recipient parse on whitespace boundaries, and fastgw rebuilds the line for
    the upstream, so "GET  / HTTP/1.1" is the request "GET / HTTP/1.1" (h11 refuses it)."""
    return _REQUEST_LINE_SPACES.sub(rb"\1 \2 \3", data, count=1)


def _faulty_framing(request: ClientRequest) -> str | None:
    """Framing RFC 9112 section 6 calls faulty, which h11 would still read one way."""
    names = [n for n, _ in request.headers]
    if b"transfer-encoding" in names and b"content-length" in names:
        return "Content-Length with Transfer-Encoding (RFC 9112 6.3: ought to be an error)"
    if b"transfer-encoding" in names and request.version == "1.0":
        return "Transfer-Encoding in HTTP/1.0 (RFC 9112 6.1: faulty framing)"
    return None


# ---------------------------------------------------------------- the check

@dataclass
class Services:
    """What the checker knows of the gateway under test."""

    routes: dict[str, str]  # host name -> service it routes to
    protected: frozenset[str]  # services with jwt-auth
    tokens: dict[str, tuple[str, str]]  # valid token -> (consumer username, credential key)


def check_invariant(ex, services: Services) -> list[str]:
    """Every way the exchange `ex` (conftest.Exchange) breaks the promise; [] if none."""
    ref = reference_requests(ex.sent)
    problems: list[str] = []
    responses = ex.responses
    by_seq = {r.seq: r for r in ex.records}
    linked: set[int] = set()

    allowed = len(ref.requests) + (1 if ref.error or ref.incomplete or ref.stopped else 0)
    if len(responses) > allowed:
        problems.append(f"{len(responses)} responses to {len(ref.requests)} client request(s)"
                        f"{' + refused bytes' if allowed > len(ref.requests) else ''}: the "
                        f"gateway answered a request the client did not send as one")

    for i, resp in enumerate(responses):
        req = ref.requests[i] if i < len(ref.requests) else None
        tag = resp.header(b"x-upstream-record")
        seq = int(tag.rsplit(b":", 1)[1]) if tag else None
        if 200 <= resp.status < 300:
            if req is None:
                why = ref.error or ("incomplete request" if ref.incomplete else ref.stopped)
                problems.append(f"response {i + 1} is {resp.status} for bytes the reference "
                                f"parser does not read as a request ({why})")
            record = by_seq.get(seq) if seq is not None else None
            if record is None:
                if tag is None:
                    problems.append(f"response {i + 1} ({resp.status}) did not come from "
                                    f"the upstream")
                else:
                    problems.append(f"response {i + 1} names upstream record {seq}, which "
                                    f"belongs to another exchange")
                continue
            if seq in linked:
                problems.append(f"upstream record {seq} answered two client requests")
            linked.add(seq)
            if req is not None:
                problems += [f"request {i + 1}: {p}" for p in _same_request(req, record, services)]
        elif tag is not None and seq in by_seq:
            linked.add(seq)  # the upstream's own refusal, relayed; its record is judged below

    refused_any = len(responses) < len(ref.requests) or ref.error or ref.incomplete or \
        any(not 200 <= r.status < 300 for r in responses)
    for record in ex.records:
        problems += [f"upstream #{record.seq}: {p}" for p in _record_rules(record, ex, services)]
        if record.seq in linked:
            continue
        if record.complete:
            problems.append(f"upstream #{record.seq} ({record.method} {record.target} on "
                            f"{record.service}) answers no client 2xx: a request the client "
                            f"did not send as one reached the upstream")
        elif record.error or not record.method:
            pass  # reported with the record's rules
        elif not record.cut_off:
            problems.append(f"upstream #{record.seq} ({record.method} {record.target}) is left "
                            f"half sent: fastgw neither finished nor cut off its request")
        elif not refused_any:
            problems.append(f"upstream #{record.seq} was cut off although every client request "
                            f"was answered 2xx")

    if not ex.closed and len(responses) < len(ref.requests):
        problems.append(f"{len(ref.requests) - len(responses)} complete request(s) unanswered "
                        f"after {ex.deadline:g} s, connection still open")
    return problems


def _record_rules(record, ex, services: Services) -> list[str]:
    """What holds for every request the upstream sees, whoever it answers."""
    out: list[str] = []
    if record.error:
        out.append(f"h11 refused what fastgw sent: {record.error} "
                   f"(unread: {record.leftover[:60]!r})")
    if not record.method:
        if not record.error:
            out.append(f"fastgw sent {record.leftover[:80]!r}, which the upstream reads as the "
                       f"start of a request line")
        return out  # not even a request line: nothing else to judge
    if record.version and record.version != "1.1":
        out.append(f"upstream request is HTTP/{record.version}")
    names = [n.lower() for n, _ in record.headers]
    cl, te = names.count(b"content-length"), names.count(b"transfer-encoding")
    if cl > 1 or te > 1 or (cl and te):
        out.append(f"framing fields upstream: {cl} Content-Length, {te} Transfer-Encoding")
    spelled = [n for n, _ in record.headers if n.lower() not in FRAMING
               and normalized_name(n) in FRAMING]
    if spelled:
        out.append(f"{b', '.join(spelled).decode('latin-1')} reached the upstream: framing to "
                   f"an upstream that reads '_' as '-'")
    for value in record.values(b"transfer-encoding"):
        if value.strip().lower() != b"chunked":
            out.append(f"Transfer-Encoding: {value!r} upstream")
    for value in record.values(b"content-length"):
        if record.complete and value.strip() != str(len(record.body)).encode():
            out.append(f"Content-Length: {value.decode('latin-1')!r} for a {len(record.body)}-byte "
                       f"body: not the length fastgw parsed, written as a number")
    hosts = record.values(b"host")
    if len(hosts) != 1:
        out.append(f"{len(hosts)} Host fields upstream")
    elif services.routes.get(host_name(hosts[0].decode("latin-1"))) != record.service:
        out.append(f"Host {hosts[0]!r} does not route to {record.service}, where it arrived")
    if b"upgrade" in names:
        out.append("an Upgrade field reached the upstream")
    if record.trailers:
        out.append(f"trailers reached the upstream: {record.trailers!r}")

    # identity: fastgw's own, or nothing
    identity = [(n, v) for n, v in record.headers if normalized_name(n) in IDENTITY]
    if record.service in services.protected:
        users = [(n, v) for n, v in identity if normalized_name(n) == IDENTITY[0]]
        keys = [(n, v) for n, v in identity if normalized_name(n) == IDENTITY[1]]
        where = credential(record.headers, record.target)
        token = where[1] if where else None
        if len(users) != 1 or len(keys) != 1 or users[0][0] != IDENTITY[0] \
                or keys[0][0] != IDENTITY[1]:
            out.append(f"identity fields on a protected upstream request: {identity!r}")
        elif token is not None and token not in services.tokens:
            out.append(f"protected upstream request carries an unverified credential "
                       f"{where!r}")
        elif token is not None and (users[0][1].decode(), keys[0][1].decode()) != \
                services.tokens[token]:
            out.append(f"identity {identity!r} is not the token's {services.tokens[token]!r}")
    elif identity:
        out.append(f"client identity fields reached {record.service}: {identity!r}")

    # forwarding fields: fastgw's own
    for name in FORWARDING:
        found = [(n, v) for n, v in record.headers if normalized_name(n) == name]
        if len(found) != 1 or found[0][0] != name:
            out.append(f"{name.decode()} fields upstream: {found!r}")
            continue
        value = found[0][1].decode("latin-1")
        if name == b"x-real-ip" and value != ex.client_ip:
            out.append(f"x-real-ip {value!r} is not the client {ex.client_ip}")
        elif name == b"x-forwarded-for" and value.rsplit(",", 1)[-1].strip() != ex.client_ip:
            out.append(f"x-forwarded-for {value!r} does not end with the client {ex.client_ip}")
        elif name == b"x-forwarded-proto" and value != "http":
            out.append(f"x-forwarded-proto {value!r}")
        elif name == b"x-forwarded-host" and len(hosts) == 1 and \
                value.lower() != hosts[0].decode("latin-1").lower():
            out.append(f"x-forwarded-host {value!r} differs from Host {hosts[0]!r}")
    return out


def _same_request(req: ClientRequest, record, services: Services) -> list[str]:
    """A 2xx: the upstream request must be the client's request."""
    out: list[str] = []
    if record.method != req.method:
        out.append(f"method {record.method!r} upstream, {req.method!r} sent")
    _, path, query = split_target(req.target)
    up_authority, up_path, up_query = split_target(record.target)
    if up_path not in (path, normal_form(path)) or up_query != query:
        out.append(f"target {record.target!r} upstream, {req.target!r} sent")
    if not record.complete:
        out.append("the upstream request is incomplete")
    elif record.body != req.body:
        out.append(f"body {record.body[:80]!r} ({len(record.body)} bytes) upstream, "
                   f"{req.body[:80]!r} ({len(req.body)} bytes) sent")
    host = req.host
    hosts = record.values(b"host")
    if host is None:
        out.append("answered 2xx without one Host to route on")
    else:
        expected = services.routes.get(host_name(host))
        if record.service != expected:
            out.append(f"host {host!r} routes to {expected}, request went to {record.service}")
        if len(hosts) == 1 and host_and_port(hosts[0].decode("latin-1")) != host_and_port(host):
            out.append(f"Host {hosts[0]!r} upstream, routed on {host!r}")
    if up_authority is not None and host is not None and up_authority.lower() != host.lower():
        out.append(f"absolute-form authority {up_authority!r} upstream, routed on {host!r}")
    if record.service in services.protected:
        sent = credential(req.headers, req.target)
        seen = credential(record.headers, record.target)
        if sent is None or sent[1] == AMBIGUOUS or sent[1] not in services.tokens:
            out.append(f"reached a protected upstream with credential {sent!r}")
        elif seen != sent:
            named = sent[0] == "header" and b"authorization" in connection_options(req.headers)
            if not (named and seen is None):
                out.append(f"credential {seen!r} upstream, {sent!r} verified")
    head = {(normalized_name(n), v) for n, v in req.headers}
    for name, value in req.trailers:
        if (normalized_name(name), value) not in head and \
                any(normalized_name(n) == normalized_name(name) and v == value
                    for n, v in record.headers):
            out.append(f"client trailer {name.decode()}: {value!r} forwarded in the head")
    return out
