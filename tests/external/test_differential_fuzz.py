"""Differential fuzz: generated requests, mutated where parsers disagree, judged by the invariant.

Hypothesis builds valid requests (method, path, query, a host of protected.example or
public.example, a token in the header, query or cookie or none, a body framed by
Content-Length or chunked, 1 to 3 of them pipelined, sometimes written in two pieces)
and mutates them where HTTP parsers are known to disagree: framing fields duplicated,
odd-cased or padded, transfer codings, chunk-size lines, line endings, Host variants,
Connection options naming framing or identity fields, trailers carrying credentials or
identity, identity fields in any spelling, Upgrade with a body, HTTP/1.0 with chunked,
a credential given twice, obs-fold, control characters, absolute-form targets. Whatever
the gateway answers, the exchange must satisfy the invariant (`invariant.py`), judged
against h11's reading of the same bytes; the gateway must also answer every complete
request within 2 s (an Upgrade with a body included).

Bounded: `make test` runs 60 examples plus 4 for each mutation, derandomized and without
shrinking; `make fuzz` sets FASTGW_FUZZ_EXAMPLES (and a tenth of it for each mutation),
random, and shrinks what fails to a minimal exchange.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from .conftest import PROTECTED, PUBLIC

EXAMPLES = int(os.environ.get("FASTGW_FUZZ_EXAMPLES", "60"))
EXPLORING = "FASTGW_FUZZ_EXAMPLES" in os.environ  # `make fuzz`: random, and shrink failures
PER_MUTATION = max(4, EXAMPLES // 10)
DEADLINE = 2.0  # seconds the gateway has to answer a complete request
OTHER_HOST = "other.example"
BAD_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJrZXkiOiJub2JvZHkifQ.c2lnbmF0dXJl"
VALID = "@token@"  # replaced by the consumer's token when the bytes are written


def fuzz_settings(examples: int):
    return settings(
        max_examples=examples, deadline=None, derandomize=not EXPLORING,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target]
        + ([Phase.shrink] if EXPLORING else []),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=EXPLORING)


# ---------------------------------------------------------------- a request, to be mutated

@dataclass
class Draft:
    method: str
    target: str
    version: str
    headers: list[list[str]]  # [name, value], in order
    body: bytes = b""
    framing: str = "none"  # none | length | chunked
    chunks: list[bytes] = field(default_factory=list)
    size_lines: list[str] = field(default_factory=list)  # one per chunk, then the last one
    trailers: list[list[str]] = field(default_factory=list)
    eol: dict = field(default_factory=dict)  # head line index -> its line ending
    chunk_eol: str = "\r\n"

    def find(self, name: str) -> list[int]:
        return [i for i, (n, _) in enumerate(self.headers) if n.strip().lower() == name]

    def set(self, name: str, value: str) -> None:
        found = self.find(name.lower())
        if found:
            self.headers[found[0]][1] = value
        else:
            self.headers.append([name, value])

    def drop(self, name: str) -> None:
        self.headers = [h for h in self.headers if h[0].strip().lower() != name]

    def serialize(self, token: str) -> bytes:
        lines = [f"{self.method} {self.target} HTTP/{self.version}"]
        lines += [f"{n}: {v}" for n, v in self.headers]
        head = "".join(line + self.eol.get(i, "\r\n") for i, line in enumerate(lines)) + "\r\n"
        out = head.replace(VALID, token).encode("latin-1")
        if self.framing == "chunked":
            for size, data in zip(self.size_lines, self.chunks):
                out += size.encode("latin-1") + self.chunk_eol.encode() + data + b"\r\n"
            out += self.size_lines[-1].encode("latin-1") + self.chunk_eol.encode()
            for n, v in self.trailers:
                out += f"{n}: {v}\r\n".replace(VALID, token).encode("latin-1")
            out += b"\r\n"
        else:
            out += self.body
        return out


SEGMENTS = ["a", "b", "api", "v1", "..", ".", "%2e%2e", "x%20y", "~u", "a;b", "%2F"]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@st.composite
def drafts(draw) -> Draft:
    host = draw(st.sampled_from([PROTECTED, PUBLIC]))
    path = "/" + "/".join(draw(st.lists(st.sampled_from(SEGMENTS), max_size=3)))
    query = draw(st.lists(st.sampled_from(["a=1", "b=x%20y", "c", "d=&e=2"]), max_size=2))
    headers = [["Host", host]]
    place = draw(st.sampled_from([None, "header", "bearer", "query", "cookie"]))
    token = draw(st.sampled_from([VALID, VALID, BAD_TOKEN]))
    if place == "query":
        query.append(f"jwt={token}")
    elif place in ("header", "bearer"):
        headers.append(["Authorization", ("Bearer " if place == "bearer" else "") + token])
    elif place == "cookie":
        headers.append(["Cookie", f"theme=dark; jwt={token}"])
    target = path + ("?" + "&".join(query) if query else "")
    headers += draw(st.lists(st.sampled_from([["Accept", "*/*"], ["X-Test", "1"],
                                              ["User-Agent", "fuzz/1.0"]]), max_size=2))
    body = draw(st.binary(max_size=40))
    framing = draw(st.sampled_from(["length", "chunked"] + (["none"] if not body else [])))
    method = draw(st.sampled_from(METHODS))
    draft = Draft(method, target, "1.1", headers, body, framing)
    if framing == "length":
        draft.headers.append(["Content-Length", str(len(body))])
    elif framing == "chunked":
        draft.headers.append(["Transfer-Encoding", "chunked"])
        cuts = sorted(draw(st.sets(st.integers(1, max(1, len(body) - 1)), max_size=2))) \
            if len(body) > 1 else []
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]
        draft.chunks = [p for p in pieces if p]
        draft.size_lines = [f"{len(c):x}" for c in draft.chunks] + ["0"]
    return draft


# ---------------------------------------------------------------- the mutations

def _random_case(draw, name: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if f else c.lower() for c, f in zip(name, flips))


def dup_content_length(draw, d: Draft) -> None:
    n = len(d.body)
    value = draw(st.sampled_from([str(n), str(n + 1), "0", f"{n}, 1"]))
    d.headers.insert(draw(st.integers(0, len(d.headers))), ["Content-Length", value])


def odd_case_framing(draw, d: Draft) -> None:
    for i in d.find("content-length") + d.find("transfer-encoding"):
        d.headers[i][0] = _random_case(draw, d.headers[i][0])


def padded_framing_value(draw, d: Draft) -> None:
    for i in d.find("content-length") + d.find("transfer-encoding"):
        pad = draw(st.sampled_from([" {}", "{} ", "\t{}", "{}\t", "  {}  ", "0{}", "+{}"]))
        d.headers[i][1] = pad.format(d.headers[i][1])


def framing_name_whitespace(draw, d: Draft) -> None:
    for i in d.find("content-length") + d.find("transfer-encoding"):
        d.headers[i][0] += draw(st.sampled_from([" ", "\t", "  "]))


TE_VALUES = ["chunked", "Chunked", "CHUNKED", "chunked, chunked", "gzip, chunked", "chunked, gzip",
             "identity", "xchunked", "chunked;q=1", ",chunked", "chunked,", "\x0bchunked",
             '"chunked"', "chunked\x00"]


def transfer_coding(draw, d: Draft) -> None:
    value = draw(st.sampled_from(TE_VALUES))
    if d.framing == "chunked":
        d.set("Transfer-Encoding", value)
    else:
        if draw(st.booleans()):
            d.drop("content-length")
        d.headers.append(["Transfer-Encoding", value])


def chunk_size(draw, d: Draft) -> None:
    if d.framing != "chunked":
        return transfer_coding(draw, d)
    i = draw(st.integers(0, len(d.size_lines) - 1))
    form = draw(st.sampled_from(["000{}", "{}", "{};ext=1", '{};e="q"', "{}; ext", "{};", "0x{}",
                                 "{} ", " {}", "+{}", "{}\t", "-{}", "{}_0"]))
    size = d.size_lines[i]
    size = size.upper() if draw(st.booleans()) else size
    d.size_lines[i] = form.format(size)


def line_ending(draw, d: Draft) -> None:
    ending = draw(st.sampled_from(["\n", "\r", "\r\r\n", "\n\r"]))
    where = draw(st.sampled_from(["one", "all", "chunks"]))
    if where == "chunks" and d.framing == "chunked":
        d.chunk_eol = ending
    elif where == "all":
        d.eol = {i: ending for i in range(len(d.headers) + 1)}
    else:
        d.eol[draw(st.integers(0, len(d.headers)))] = ending


def host_variant(draw, d: Draft) -> None:
    if not d.find("host"):
        return
    i = d.find("host")[0]
    host = d.headers[i][1]
    kind = draw(st.sampled_from(["value", "value", "duplicate", "missing"]))
    if kind == "duplicate":
        d.headers.insert(i + 1, ["Host", draw(st.sampled_from([host, OTHER_HOST, PUBLIC,
                                                               PROTECTED]))])
    elif kind == "missing":
        del d.headers[i]
    else:
        other = PUBLIC if host == PROTECTED else PROTECTED
        d.headers[i][1] = draw(st.sampled_from([
            f"user@{host}", f"{other}@{host}", f"{host}, {other}", f"{host}:abc", f"{host}:99999",
            f"{host}:80", f"{host}:", f"{host}  ", f"{host}\t", host.upper(), "[::1]", "[::1]:80",
            "", f"{host}/x", f"{host}.", f"{host}#x", f"{host}?a", f"{host}:80:80", f" {host}"]))


def connection_option(draw, d: Draft) -> None:
    d.headers.append(["Connection", draw(st.sampled_from([
        "content-length", "transfer-encoding", "host", "authorization", "x-consumer-username",
        "x-forwarded-for", "keep-alive, content-length", "close", "keep-alive",
        "Content-Length, Transfer-Encoding, Host"]))])


def trailer(draw, d: Draft) -> None:
    if d.framing != "chunked":
        d.framing = "chunked"
        d.drop("content-length")
        d.headers.append(["Transfer-Encoding", "chunked"])
        d.chunks = [d.body] if d.body else []
        d.size_lines = [f"{len(c):x}" for c in d.chunks] + ["0"]
    d.trailers.append(list(draw(st.sampled_from([
        ("Authorization", f"Bearer {VALID}"), ("Authorization", "Bearer evil"),
        ("X-Consumer-Username", "admin"), ("X_Consumer_Username", "admin"),
        ("X-Credential-Identifier", "admin-key"), ("Host", OTHER_HOST), ("Content-Length", "50"),
        ("X-Forwarded-For", "6.6.6.6"), ("X-Trailer", "1")]))))


IDENTITY_SPELLINGS = ["X-Consumer-Username", "x-consumer-username", "X_Consumer_Username",
                      "x_consumer_username", "X-CONSUMER-USERNAME", "X-Credential-Identifier",
                      "X_Credential_Identifier", "x-credential_identifier", "X-Forwarded-For",
                      "X_Forwarded_For", "X-Forwarded-Host", "X_Forwarded_Host",
                      "X-Forwarded-Proto", "X_Forwarded_Proto", "X-Real-IP", "X_Real_IP",
                      "x-real_ip"]


def identity_header(draw, d: Draft) -> None:
    name = draw(st.sampled_from(IDENTITY_SPELLINGS))
    d.headers.insert(draw(st.integers(0, len(d.headers))),
                     [name, draw(st.sampled_from(["admin", "6.6.6.6", "evil.example", "https"]))])


def upgrade_with_body(draw, d: Draft) -> None:
    if not d.body:
        d.body = b"hello"
        d.chunks = [d.body]
        d.size_lines = ["5", "0"]
        if d.framing == "none":
            d.framing = "length"
        if d.framing == "length":
            d.drop("content-length")
            d.headers.append(["Content-Length", "5"])
    d.headers += [["Connection", "Upgrade, HTTP2-Settings"], ["Upgrade", "h2c"],
                  ["HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"]]


def http10_with_te(draw, d: Draft) -> None:
    d.version = "1.0"
    if d.framing != "chunked":
        trailer(draw, d)
        d.trailers.pop()


def duplicate_credential(draw, d: Draft) -> None:
    value = draw(st.sampled_from([f"Bearer {VALID}", BAD_TOKEN, VALID]))
    d.headers.insert(draw(st.integers(0, len(d.headers))), ["Authorization", value])


def obs_fold(draw, d: Draft) -> None:
    if not d.headers:
        return
    i = draw(st.integers(0, len(d.headers) - 1))
    d.headers[i][1] = d.headers[i][1] + draw(st.sampled_from(["\r\n x", "\r\n\tx", "\r\n "]))


def control_char(draw, d: Draft) -> None:
    if not d.headers:
        return
    i = draw(st.integers(0, len(d.headers) - 1))
    char = draw(st.sampled_from(["\x00", "\x01", "\x07", "\x0b", "\x0c", "\x1f", "\x7f", "\r"]))
    value = d.headers[i][1]
    at = draw(st.integers(0, len(value)))
    d.headers[i][1] = value[:at] + char + value[at:]


def absolute_form(draw, d: Draft) -> None:
    host = d.headers[d.find("host")[0]][1] if d.find("host") else PUBLIC
    authority = draw(st.sampled_from([host, f"{host}:80", PUBLIC, PROTECTED, OTHER_HOST,
                                      f"user@{host}", f"{host}:x", host.upper()]))
    scheme = draw(st.sampled_from(["http", "HTTP", "https"]))
    d.target = f"{scheme}://{authority}{d.target}"


MUTATIONS = {f.__name__: f for f in (
    dup_content_length, odd_case_framing, padded_framing_value, framing_name_whitespace,
    transfer_coding, chunk_size, line_ending, host_variant, connection_option, trailer,
    identity_header, upgrade_with_body, http10_with_te, duplicate_credential, obs_fold,
    control_char, absolute_form)}


@st.composite
def mutated(draw, forced: str | None = None) -> Draft:
    d = draw(drafts())
    names = draw(st.lists(st.sampled_from(sorted(MUTATIONS)), max_size=3))
    if forced:
        names = [forced, *names[:1]]
    for name in names:
        MUTATIONS[name](draw, d)
    note(f"mutations: {names}")
    return d


@st.composite
def exchanges(draw, forced: str | None = None) -> tuple[list[Draft], int | None]:
    """1 to 3 pipelined requests, and where to cut the bytes in two writes (or None)."""
    requests = draw(st.lists(mutated(forced) if forced else mutated(), min_size=1, max_size=3))
    cut = draw(st.one_of(st.none(), st.integers(1, 400)))
    return requests, cut


def run(edge, requests: list[Draft], cut: int | None) -> None:
    data = b"".join(d.serialize(edge.token) for d in requests)
    steps = [data[:cut], data[cut:]] if cut is not None and cut < len(data) else [data]
    note(f"bytes: {data!r}")
    edge.check(edge.exchange(*steps, deadline=DEADLINE))


@pytest.mark.timeout(60 + 4 * EXAMPLES)
@fuzz_settings(EXAMPLES)
@given(exchanges())
def test_generated_exchanges_keep_the_invariant(edge, generated):
    run(edge, *generated)


@pytest.mark.timeout(60 + 4 * PER_MUTATION)
@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_each_mutation_keeps_the_invariant(edge, mutation):
    @fuzz_settings(PER_MUTATION)
    @given(exchanges(mutation))
    def check(generated):
        run(edge, *generated)
    check()
