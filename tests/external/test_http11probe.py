"""Http11Probe's whole table of HTTP/1.1 cases, against the gateway and its recording upstream.

Ported from Http11Probe (https://github.com/MDA2AV/Http11Probe, MIT licence, Copyright (c)
2026 Diogo Martins), commit 95bc6a991b2ad2bddd61d58c92c36d543d895ffa, files
src/Http11Probe/TestCases/Suites/{ComplianceSuite,SmugglingSuite,MalformedInputSuite,
NormalizationSuite,CapabilitiesSuite,CookieSuite}.cs: every case's id, raw bytes (its
`PayloadFactory` or sequence steps as Encoding.ASCII sends them, with `{H}` where the probe
puts its target's host[:port]), RFC reference and expected outcome (its `ExpectedBehavior`
or `Validator`, as `Probe`).

Each case runs against `public.example`, and, when its bytes name the host, once more
against `protected.example` with the consumer's token in an Authorization field before
the first Host field of each step (bytes smuggled inside a body get no token, so they must
never reach the protected upstream). Every run asserts the invariant (`invariant.py`),
then what fastgw does (`fastgw`: one spec per response, e.g. "400+close"), then
Http11Probe's verdict is not "fail" -- except where fastgw deliberately differs or the
SPEC does not say (`differs` / `silent`, with the reason), where the verdict is only
reported as a warning. Cases that judge an origin server's echo (the probe's /echo and
/cookie endpoints) are judged on what the upstream received instead.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Callable

import pytest

from .conftest import PROTECTED, PUBLIC, answers_mismatch

PASS, WARN, FAIL = "pass", "warn", "fail"


class ProbeVerdict(UserWarning):
    """Http11Probe's verdict on a case where fastgw's contract decides instead."""


# ---------------------------------------------------------------- Http11Probe's view of an exchange

@dataclass
class Seen:
    """One step as Http11Probe's runner sees it."""
    executed: bool
    response: object  # the step's first final response, or None
    state: str  # open | closed | timeout
    status_lines: int  # responses read in the step
    ex: object

    def record(self, response=None):
        """The upstream record that produced `response` (the step's first by default)."""
        response = response or self.response
        tag = response.header(b"x-upstream-record") if response else None
        seq = int(tag.rsplit(b":", 1)[1]) if tag else None
        return next((r for r in self.ex.records if r.seq == seq), None)


def seen(ex) -> list[Seen]:
    return [Seen(s.executed, s.responses[0] if s.responses else None, s.state,
                 len(s.responses), ex) for s in ex.steps]


def _match(match, r, s) -> bool:
    if match == "2xx":
        return 200 <= r.status < 300
    if isinstance(match, int):
        return r.status == match
    if isinstance(match, tuple):
        return r.status in match
    return match(r, s)


@dataclass(frozen=True)
class Probe:
    """Http11Probe's expected outcome: its description and its validator."""
    description: str
    judge: Callable[[list[Seen]], str]


CLOSE_PASS = {"closed": PASS}
QUIET_PASS = {"closed": PASS, "timeout": PASS}  # "400/close/timeout"


def exact(status, close=False) -> Probe:
    """ExpectedBehavior { ExpectedStatus, AllowConnectionClose }."""
    def judge(steps):
        r = steps[0].response
        if r is None:
            return PASS if close else FAIL
        return PASS if _match(status, r, steps[0]) else FAIL
    return Probe(f"{status}{' or close' if close else ''}", judge)


def rules(description, *pairs, none=CLOSE_PASS, default=FAIL) -> Probe:
    """A CustomValidator: `none` by state when there is no response, else the first
    (match, verdict) pair that matches the response."""
    def judge(steps):
        s = steps[0]
        if s.response is None:
            return none.get(s.state, FAIL)
        for match, verdict in pairs:
            if _match(match, s.response, s):
                return verdict(s.response, s) if callable(verdict) else verdict
        return default
    return Probe(description, judge)


R400_OR_2XX = rules("400 or 2xx", (400, PASS), ("2xx", WARN))
R400_501 = rules("400/501 or close", ((400, 501), PASS))
R400_QUIET = rules("400/close/timeout", (400, PASS), none=QUIET_PASS)
NOT_101 = rules("!101", (101, FAIL), default=PASS)
NO_CRASH = rules("2xx (no crash)", (404, WARN), ("2xx", PASS), (400, PASS), none={"closed": WARN})


def echo(expected: bytes) -> Probe:
    """EchoValidator: 2xx, and the body echoed -- here, the body the upstream received."""
    def body_seen(r, s):
        record = s.record(r)
        return PASS if record is not None and record.body == expected else FAIL
    return rules("2xx + echo", ("2xx", body_seen), none={})


def upstream_has(description, *pairs: tuple[bytes, bytes], none=None, on_400=FAIL,
                 on_404=FAIL) -> Probe:
    """Cookie echo / parsed-cookie cases: the fields reached the upstream."""
    def fields_seen(r, s):
        record = s.record(r)
        if record is None:
            return FAIL
        joined = b"; ".join(record.values(pairs[0][0])) if pairs else b""
        return PASS if all(v in joined for _, v in pairs) else FAIL
    return rules(description, ("2xx", fields_seen), (400, on_400), (404, on_404),
                 none=none if none is not None else {"closed": WARN})


def normalization(standard: bytes, malformed: bytes, value: bytes) -> Probe:
    """MakeValidator: refused or dropped passes, normalised to the standard name fails,
    preserved warns -- read from what the upstream received, not an echo."""
    def judge_2xx(r, s):
        record = s.record(r)
        if record is None:
            return PASS
        for name, v in record.headers:
            if v.strip().lower() == value.lower() and name.lower() == standard.lower():
                return FAIL
        for name, v in record.headers:
            if v.strip().lower() == value.lower() and name.lower() == malformed.lower():
                return WARN
        return PASS
    return rules("refuse/drop (pass), normalise (fail), preserve (warn)",
                 (lambda r, s: r.status >= 400, PASS), ("2xx", judge_2xx))


def case_normalization(standard: bytes, original: bytes, value: bytes) -> Probe:
    """MakeCaseValidator: the original casing preserved warns, another casing fails."""
    def judge_2xx(r, s):
        record = s.record(r)
        for name, v in (record.headers if record else []):
            if v.strip().lower() == value.lower():
                if name == original:
                    return WARN
                if name.lower() == standard.lower():
                    return FAIL
        return PASS
    return rules("refuse/drop (pass), normalise casing (fail), preserve (warn)",
                 (lambda r, s: r.status >= 400, PASS), ("2xx", judge_2xx))


# sequence validators (SmugglingSuite.GetSequenceTestCases, CapabilitiesSuite)

def _rejected_or_closed(s: Seen) -> bool:
    return (s.response is not None and s.response.status == 400) or not s.executed \
        or s.state == "closed"


def seq_must_close(description="400, or 2xx + close") -> Probe:
    """CONN-CLOSE / DESYNC / OBS-FOLD sequences: 400 or close; 2xx then a kept
    connection fails."""
    def judge(steps):
        s1, s2 = steps[0], steps[1]
        if _rejected_or_closed(s1):
            return PASS
        if s1.response is not None and 200 <= s1.response.status < 300:
            return PASS if not s2.executed else FAIL
        return FAIL
    return Probe(description, judge)


def seq_no_extra_response() -> Probe:
    """SMUGGLED-GET sequences: two status lines in one read fail; 400 or close pass."""
    def judge(steps):
        s1 = steps[0]
        if s1.status_lines >= 2:
            return FAIL
        return PASS if _rejected_or_closed(s1) else FAIL
    return Probe("400, or close (no extra response)", judge)


def seq_unread_body(description="400/close/pass-through; poisoned follow-up = warn",
                    first_ok=(400,), step2_400=WARN, step2_multi=None, otherwise=FAIL) -> Probe:
    """Unread-body desync sequences: a follow-up that looks poisoned warns."""
    def judge(steps):
        s1, s2 = steps[0], steps[1]
        if s1.response is not None and s1.response.status in first_ok:
            return PASS
        if not s1.executed or s1.state == "closed":
            return PASS
        if s1.response is not None and 200 <= s1.response.status < 300:
            if not s2.executed:
                return PASS
            if step2_multi is not None and s2.status_lines >= 2:
                return step2_multi
            if s2.response is not None and s2.response.status == 400:
                return step2_400
            if s2.response is not None and 200 <= s2.response.status < 300:
                return PASS
            return WARN
        return otherwise
    return Probe(description, judge)


def seq_cl0_poison() -> Probe:
    def judge(steps):
        s1, s2 = steps[0], steps[1]
        if _rejected_or_closed(s1):
            return PASS
        if s1.response is not None and 200 <= s1.response.status < 300:
            return PASS if not s2.executed else WARN
        return FAIL
    return Probe("400/close preferred; poisoned follow-up = warn", judge)


def seq_pipeline_safe() -> Probe:
    def judge(steps):
        s1, s2 = steps[0], steps[1]
        if s1.response is None or not 200 <= s1.response.status < 300:
            return FAIL
        if not s2.executed:
            return WARN
        return PASS if s2.response is not None and 200 <= s2.response.status < 300 else WARN
    return Probe("2xx + 2xx", judge)


def seq_conditional(description, second_2xx, second_304) -> Probe:
    """CapabilitiesSuite: the upstream sends no ETag or Last-Modified, so each case takes
    its no-validator branch (Warn) unless its second request is judged on its own."""
    def judge(steps):
        s1, s2 = steps[0], steps[1]
        if s1.response is None or not 200 <= s1.response.status < 300:
            return "error"
        if second_2xx is None:  # needs a validator from the first response
            if s1.response.header(b"etag") is None and s1.response.header(b"last-modified") is None:
                return WARN
        if not s2.executed or s2.response is None:
            return WARN
        if s2.response.status == 304:
            return second_304
        if 200 <= s2.response.status < 300:
            return second_2xx or WARN
        return FAIL
    return Probe(description, judge)


# ---------------------------------------------------------------- the table

Payload = "str | Callable[[str], str]"


@dataclass(frozen=True)
class Case:
    id: str
    rfc: str | None
    steps: tuple  # each a template ("{H}": the host; "{CL}": the length of its body) or host -> str
    probe: Probe
    fastgw: tuple | dict  # response specs; {"public": ..., "protected": ...} when they differ
    differs: str = ""  # why fastgw's contract does not do what Http11Probe expects
    silent: str = ""  # what the SPEC does not say, so that the probe's verdict is not asserted
    deadline: float = 1.0

    def names_host(self) -> bool:
        return any(callable(s) or "{H}" in s for s in self.steps)

    def render(self, variant: str, token: str) -> list[bytes]:
        host = PROTECTED if variant == "protected" else PUBLIC
        out = []
        for step in self.steps:
            text = step(host) if callable(step) else step.replace("{H}", host)
            if "{CL}" in text:
                head, sep, body = text.partition("\r\n\r\n")
                text = head.replace("{CL}", str(len(body.encode("latin-1")))) + sep + body
            if variant == "protected":
                text = re.sub(r"(?<=[\r\n])Host:", f"Authorization: Bearer {token}\r\nHost:",
                              text, count=1)
            out.append(text.encode("latin-1"))
        return out

    def expected(self, variant: str) -> tuple:
        return self.fastgw[variant] if isinstance(self.fastgw, dict) else self.fastgw


def C(id, rfc, payload, probe, *fastgw, **extra) -> Case:
    steps = tuple(payload) if isinstance(payload, list) else (payload,)
    return Case(id, rfc, steps, probe, fastgw[0] if isinstance(fastgw[0], dict) else fastgw,
                **extra)


def dotnet_random_bytes(seed: int, count: int) -> bytes:
    """`new Random(seed).NextBytes(new byte[count])`: the subtractive generator (Knuth) that
    .NET keeps for a seeded System.Random, as .NET Framework had it."""
    mbig, mseed = 2**31 - 1, 161803398
    seeds = [0] * 56
    mj = mseed - abs(seed)
    seeds[55] = mj
    mk = 1
    for i in range(1, 55):
        ii = (21 * i) % 55
        seeds[ii] = mk
        mk = mj - mk
        if mk < 0:
            mk += mbig
        mj = seeds[ii]
    for _ in range(4):
        for i in range(1, 56):
            seeds[i] -= seeds[1 + (i + 30) % 55]
            if seeds[i] < 0:
                seeds[i] += mbig
    inext, inextp, out = 0, 21, bytearray()
    for _ in range(count):
        inext = 1 if inext + 1 >= 56 else inext + 1
        inextp = 1 if inextp + 1 >= 56 else inextp + 1
        value = seeds[inext] - seeds[inextp]
        if value == mbig:
            value -= 1
        if value < 0:
            value += mbig
        seeds[inext] = value
        out.append(value % 256)
    return bytes(out)


GET = "GET / HTTP/1.1\r\nHost: {H}\r\n\r\n"
SMUGGLED_GET = "0\r\n\r\nGET / HTTP/1.1\r\nHost: {H}\r\n\r\n"
WS = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
CL_TE = "SPEC 5: Content-Length with Transfer-Encoding is 400"


def tecl_smuggled_get(host: str) -> str:
    smuggled = f"GET / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 7\r\n\r\n"
    size = f"{len(smuggled):x}"
    return (f"POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Length: {len(size) + 2}\r\n\r\n{size}\r\n{smuggled}\r\n0\r\n\r\n")


COMPLIANCE = [
    C("COMP-BASELINE", None, GET, exact("2xx"), "2xx"),
    C("RFC9112-2.2-BARE-LF-REQUEST-LINE", "RFC 9112 §2.2", "GET / HTTP/1.1\nHost: {H}\r\n\r\n",
      rules("400 or close (pass), 2xx (warn)", (400, PASS), ("2xx", WARN)), "400+close"),
    C("RFC9112-2.2-BARE-LF-HEADER", "RFC 9112 §2.2",
      "GET / HTTP/1.1\r\nHost: {H}\nX-Test: value\r\n\r\n",
      rules("400 or close (pass), 2xx (warn)", (400, PASS), ("2xx", WARN)), "400+close"),
    C("RFC9112-5.1-OBS-FOLD", "RFC 9112 §5.1",
      "GET / HTTP/1.1\r\nHost: {H}\r\nX-Test: value\r\n continued\r\n"
      "\r\n", exact(400), "400+close"),
    C("RFC9110-5.6.2-SP-BEFORE-COLON", "RFC 9112 §5",
      "GET / HTTP/1.1\r\nHost: {H}\r\nX-Test : value\r\n\r\n", exact(400), "400+close"),
    # the reference parser refuses it, so a 2xx would break the invariant
    C("RFC9112-3-MULTI-SP-REQUEST-LINE", "RFC 9112 §3", "GET  / HTTP/1.1\r\nHost: {H}\r\n\r\n",
      R400_OR_2XX, "2xx"),  # RFC 9112 3: a recipient MAY split on whitespace; fastgw rebuilds
                            # the request line for the upstream, so no extra space goes on
    C("RFC9112-7.1-MISSING-HOST", "RFC 9112 §3.2",
      "GET / HTTP/1.1\r\n\r\n", exact(400), "400+close"),
    C("RFC9112-2.3-INVALID-VERSION", "RFC 9112 §2.3", "GET / HTTP/9.9\r\nHost: {H}\r\n\r\n",
      rules("400/505 or close", ((400, 505), PASS)), "505"),
    C("RFC9112-5-EMPTY-HEADER-NAME", "RFC 9112 §5",
      "GET / HTTP/1.1\r\nHost: {H}\r\n: empty-name\r\n\r\n", exact(400, close=True), "400+close"),
    C("RFC9112-3-CR-ONLY-LINE-ENDING", "RFC 9112 §2.2", "GET / HTTP/1.1\rHost: {H}\r\n\r\n",
      exact(400), "400+close"),
    C("RFC9112-3-MISSING-TARGET", "RFC 9112 §3", "GET HTTP/1.1\r\nHost: {H}\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("RFC9112-3.2-FRAGMENT-IN-TARGET", "RFC 9112 §3.2",
      "GET /path#frag HTTP/1.1\r\nHost: {H}\r\n\r\n",
      R400_OR_2XX, "400+close|2xx",
      silent="whether a fragment is refused or relayed (as sent) is not in the SPEC"),
    C("RFC9112-2.3-HTTP09-REQUEST", "RFC 9112 §2.3", "GET /\r\n",
      rules("400/close/timeout", (400, PASS), none={"closed": PASS, "timeout": PASS}),
      "none|400+close"),  # llhttp waits for the head's end; FASTGW_HEADER_TIMEOUT answers 408
    C("RFC9112-5-INVALID-HEADER-NAME", "RFC 9112 §5",
      "GET / HTTP/1.1\r\nHost: {H}\r\nBad[Name: value\r\n"
      "\r\n", exact(400, close=True), "400+close"),
    C("RFC9112-5-HEADER-NO-COLON", "RFC 9112 §5",
      "GET / HTTP/1.1\r\nHost: {H}\r\nNoColonHere\r\n\r\n", exact(400, close=True), "400+close"),
    C("RFC9110-5.4-DUPLICATE-HOST", "RFC 9112 §3.2",
      "GET / HTTP/1.1\r\nHost: {H}\r\nHost: other.example.com\r\n\r\n", exact(400), "400+close"),
    C("RFC9112-6.1-CL-NON-NUMERIC", "RFC 9112 §6.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: abc\r\n"
      "\r\n", exact(400, close=True), "400+close"),
    C("RFC9112-6.1-CL-PLUS-SIGN", "RFC 9112 §6.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: +5\r\n\r\nhello", exact(400, close=True),
      "400+close"),
    C("COMP-WHITESPACE-BEFORE-HEADERS", "RFC 9112 §2.2",
      "GET / HTTP/1.1\r\n \r\nHost: {H}\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("COMP-DUPLICATE-HOST-SAME", "RFC 9112 §3.2",
      "GET / HTTP/1.1\r\nHost: {H}\r\nHost: {H}\r\n\r\n",
      exact(400), "400+close"),
    C("COMP-HOST-WITH-USERINFO", "RFC 9112 §3.2", "GET / HTTP/1.1\r\nHost: user@{H}\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("COMP-HOST-WITH-PATH", "RFC 9112 §3.2", "GET / HTTP/1.1\r\nHost: {H}/path\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("COMP-ASTERISK-WITH-GET", "RFC 9112 §3.2.4", "GET * HTTP/1.1\r\nHost: {H}\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("COMP-OPTIONS-STAR", "RFC 9112 §3.2.4", "OPTIONS * HTTP/1.1\r\nHost: {H}\r\n\r\n",
      exact("2xx"), "404",
      differs="asterisk-form asks about the server itself; fastgw has no route for it and "
              "answers it as a request no route matches (SPEC 3 routes paths only)"),
    C("COMP-UNKNOWN-TE-501", "RFC 9112 §6.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: gzip\r\n\r\n",
      R400_501, "501+close"),
    C("COMP-LEADING-CRLF", "RFC 9112 §2.2", "\r\n\r\nGET / HTTP/1.1\r\nHost: {H}\r\n\r\n",
      R400_OR_2XX, "2xx|400+close"),
    C("COMP-ABSOLUTE-FORM", "RFC 9112 §3.2.2", "GET http://{H}/ HTTP/1.1\r\nHost: {H}\r\n\r\n",
      rules("2xx preferred; 400 warns", ("2xx", PASS), (400, WARN), none={"closed": WARN}), "2xx"),
    C("COMP-METHOD-CASE", "RFC 9110 §9.1", "get / HTTP/1.1\r\nHost: {H}\r\n\r\n",
      rules("400/405/501 or 2xx", ((400, 405, 501), PASS), ("2xx", WARN)), "400+close|405|501"),
    # ── Body / Content-Length / Chunked
    C("COMP-POST-CL-BODY", "RFC 9112 §6.2",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\n\r\nhello",
      echo(b"hello"), "2xx"),
    C("COMP-POST-CL-ZERO", "RFC 9112 §6.2",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 0\r\n\r\n",
      exact("2xx", close=True), "2xx"),
    C("COMP-POST-NO-CL-NO-TE", "RFC 9112 §6.3", "POST / HTTP/1.1\r\nHost: {H}\r\n\r\n",
      exact("2xx", close=True), "2xx"),
    C("COMP-POST-CL-UNDERSEND", "RFC 9112 §6.2",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 10\r\n\r\n"
      "hello", R400_QUIET, "none|400+close"),
    C("COMP-CHUNKED-BODY", "RFC 9112 §7.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
      echo(b"hello"), "2xx"),
    C("COMP-CHUNKED-MULTI", "RFC 9112 §7.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n"
      " world\r\n0\r\n\r\n",
      echo(b"hello world"), "2xx"),
    C("COMP-CHUNKED-EMPTY", "RFC 9112 §7.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      exact("2xx", close=True), "2xx"),
    C("COMP-CHUNKED-NO-FINAL", "RFC 9112 §7.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
      R400_QUIET, "none|400+close"),
    # ── Upgrade / WebSocket: served without the upgrade, the connection closed after it
    C("COMP-UPGRADE-POST", "RFC 6455 §4.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" + WS +
      "Sec-WebSocket-Version: 13\r\n\r\n", NOT_101, "2xx+close"),
    C("COMP-UPGRADE-MISSING-CONN", "RFC 9110 §7.8",
      "GET / HTTP/1.1\r\nHost: {H}\r\n"
      "Upgrade: websocket\r\n" + WS + "Sec-WebSocket-Version: 13\r\n\r\n",
      NOT_101, "2xx"),
    C("COMP-UPGRADE-UNKNOWN", "RFC 9110 §7.8",
      "GET / HTTP/1.1\r\nHost: {H}\r\nConnection: Upgrade\r\nUpgrade: totally-made-up/1.0\r\n\r\n",
      NOT_101, "2xx+close"),
    # ── Methods
    C("COMP-METHOD-CONNECT", "RFC 9110 §9.3.6",
      "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
      rules("400/405/501 or close", ((400, 405, 501), PASS)), "400+close"),
    # ── Expect
    C("COMP-EXPECT-UNKNOWN", "RFC 9110 §10.1.1",
      "GET / HTTP/1.1\r\nHost: {H}\r\nExpect: 200-ok\r\n\r\n",
      rules("417 or 2xx", (417, PASS), ("2xx", WARN)), "417"),
    # ── Unscored
    C("COMP-GET-WITH-CL-BODY", "RFC 9110 §9.3.1",
      "GET / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\n\r\nhello",
      rules("400 or 2xx", (400, PASS), default=WARN), "2xx"),
    C("COMP-CHUNKED-EXTENSION", "RFC 9112 §7.1.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=value\r\nhello\r\n"
      "0\r\n\r\n",
      rules("2xx preferred; 400 warns", (400, WARN),
            ("2xx", lambda r, s: PASS if (s.record(r) and s.record(r).body == b"hello") else FAIL),
            none={"closed": WARN}), "2xx"),
    C("COMP-UPGRADE-INVALID-VER", "RFC 6455 §4.4",
      "GET / HTTP/1.1\r\nHost: {H}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" + WS +
      "Sec-WebSocket-Version: 99\r\n\r\n",
      rules("non-101 (426 preferred)", (101, FAIL), (426, PASS), ("2xx", WARN), default=PASS),
      "2xx+close"),
    C("COMP-METHOD-TRACE", "RFC 9110 §9.3.8", "TRACE / HTTP/1.1\r\nHost: {H}\r\n\r\n",
      rules("405/501 or 2xx", ((405, 501), PASS), ("2xx", WARN)), "2xx|405|501",
      silent="whether fastgw relays TRACE is not in the SPEC (it relays every method today)"),
    # ── New compliance tests
    C("COMP-HOST-EMPTY-VALUE", "RFC 9112 §3.2", "GET / HTTP/1.1\r\nHost: \r\n\r\n",
      exact(400, close=True), "400+close"),
    C("COMP-REQUEST-LINE-TAB", "RFC 9112 §3", "GET\t/ HTTP/1.1\r\nHost: {H}\r\n\r\n", R400_OR_2XX,
      "400+close"),
    C("COMP-VERSION-MISSING-MINOR", "RFC 9112 §2.3", "GET / HTTP/1\r\nHost: {H}\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("COMP-VERSION-LEADING-ZEROS", "RFC 9112 §2.3", "GET / HTTP/01.01\r\nHost: {H}\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("COMP-VERSION-WHITESPACE", "RFC 9112 §2.3", "GET / HTTP/ 1.1\r\nHost: {H}\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("COMP-CONNECTION-CLOSE", "RFC 9112 §9.3",
      "GET / HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n",
      rules("2xx + close", ("2xx", lambda r, s: PASS if s.state == "closed" else FAIL), none={}),
      "2xx+close"),
    C("COMP-HTTP10-DEFAULT-CLOSE", "RFC 9112 §9.3", "GET / HTTP/1.0\r\nHost: {H}\r\n\r\n",
      rules("2xx + close", ("2xx", lambda r, s: PASS if s.state == "closed" else WARN), none={}),
      "2xx+close"),
    C("COMP-HTTP10-NO-HOST", "RFC 9112 §3.2", "GET / HTTP/1.0\r\n\r\n",
      rules("200 or 400", ("2xx", WARN), (400, PASS)), "404",
      differs="no service here takes requests without a host, so SPEC 3 routing answers 404"),
    C("COMP-HTTP12-VERSION", "RFC 9112 §2.3", "GET / HTTP/1.2\r\nHost: {H}\r\n\r\n",
      rules("200 or 505", (lambda r, s: 200 <= r.status < 300 or r.status == 505, WARN)),
      "505"),
    C("COMP-TRACE-WITH-BODY", "RFC 9110 §9.3.8",
      "TRACE / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\n\r\nhello",
      rules("400/405 or 200", ((400, 405, 501), PASS), ("2xx", WARN)), "2xx|400+close|405|501",
      silent="what fastgw does with a TRACE body is not in the SPEC"),
    C("COMP-CHUNKED-TRAILER-VALID", "RFC 9112 §7.1.2",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
      "X-Checksum: abc\r\n\r\n",
      echo(b"hello"), "2xx"),
    C("COMP-CHUNKED-HEX-UPPERCASE", "RFC 9112 §7.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\nA\r\nhelloworld\r\n0\r\n"
      "\r\n",
      echo(b"helloworld"), "2xx"),
    # ── Range / Conditional
    C("COMP-RANGE-POST", "RFC 9110 §14.2",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\nRange: bytes=0-10\r\n\r\nhello",
      rules("2xx (Range ignored)", (206, FAIL), ("2xx", PASS), none={}), "2xx"),
    C("COMP-UPGRADE-HTTP10", "RFC 9110 §7.8",
      "GET / HTTP/1.0\r\nHost: {H}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" + WS +
      "Sec-WebSocket-Version: 13\r\n\r\n", NOT_101, "2xx+close"),
    # ── RFC 9110 response semantics
    C("COMP-HEAD-NO-BODY", "RFC 9110 §9.3.2", "HEAD / HTTP/1.1\r\nHost: {H}\r\n\r\n",
      rules("2xx with no body",
            ("2xx", lambda r, s: PASS if not r.body and not s.ex.garbage else FAIL),
            none={}), "2xx"),
    C("COMP-UNKNOWN-METHOD", "RFC 9110 §9.1", "FOOBAR / HTTP/1.1\r\nHost: {H}\r\n\r\n",
      rules("501/405/400 or close", ((501, 405, 400), PASS), ("2xx", WARN)), "400+close|405|501"),
    C("COMP-405-ALLOW", "RFC 9110 §15.5.6", "DELETE / HTTP/1.1\r\nHost: {H}\r\n\r\n",
      rules("405 + Allow header", (405, lambda r, s: PASS if r.header(b"allow") else FAIL),
            default=WARN, none={}), "2xx"),
    C("COMP-DATE-HEADER", "RFC 9110 §6.6.1", GET,
      rules("2xx with Date header", ("2xx", lambda r, s: PASS if r.header(b"date") else FAIL),
            none={}), "2xx",
      silent="the upstream sends no Date; RFC 9110 6.6.1 has a recipient with a clock add one "
             "when it forwards such a response, the SPEC does not say fastgw does"),
    C("COMP-DATE-FORMAT", "RFC 9110 §5.6.7", GET,
      rules("IMF-fixdate format", ("2xx", lambda r, s: WARN if r.header(b"date") is None else
                                   PASS if re.fullmatch(rb"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} "
                                                        rb"\d\d:\d\d:\d\d GMT", r.header(b"date"))
                                   else WARN), none={}), "2xx",
      silent="see COMP-DATE-HEADER"),
    C("COMP-NO-1XX-HTTP10", "RFC 9110 §15.2",
      "POST / HTTP/1.0\r\nHost: {H}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
      rules("non-1xx response", (lambda r, s: bool(r.interim), FAIL), default=PASS,
            none={"closed": PASS, "timeout": PASS}), "2xx+close"),
    C("COMP-NO-CL-IN-204", "RFC 9110 §8.6", "OPTIONS / HTTP/1.1\r\nHost: {H}\r\n\r\n",
      rules("204 without CL", (204, lambda r, s: FAIL if r.header(b"content-length") else PASS),
            default=WARN, none={}), "2xx"),
    C("COMP-OPTIONS-ALLOW", "RFC 9110 §9.3.7", "OPTIONS / HTTP/1.1\r\nHost: {H}\r\n\r\n",
      rules("2xx with Allow header", ("2xx", lambda r, s: PASS if r.header(b"allow") else WARN),
            none={}), "2xx"),
    C("COMP-CONTENT-TYPE", "RFC 9110 §8.3", GET,
      rules("2xx with Content-Type",
            ("2xx", lambda r, s: PASS if r.header(b"content-type") else WARN),
            none={}), "2xx"),
    C("COMP-VERSION-CASE", "RFC 9112 §2.3", "GET / http/1.1\r\nHost: {H}\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("COMP-LONG-URL-OK", "RFC 9112 §3", "GET /" + "a" * 7900 + " HTTP/1.1\r\nHost: {H}\r\n\r\n",
      rules("not 414", (414, FAIL), default=PASS, none={"closed": WARN}), "2xx"),
    C("COMP-SPACE-IN-TARGET", "RFC 9112 §3.2", "GET /pa th HTTP/1.1\r\nHost: {H}\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("COMP-DUPLICATE-CT", "RFC 9110 §5.3",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n"
      "Content-Type: text/html\r\n\r\nhello", R400_OR_2XX, "2xx|400+close",
      silent="whether conflicting Content-Type fields are refused is not in the SPEC"),
    # with the token of the protected run, Authorization is given twice: refused
    C("COMP-TRACE-SENSITIVE", "RFC 9110 §9.3.8",
      "TRACE / HTTP/1.1\r\nHost: {H}\r\nAuthorization: Bearer secret-token-123\r\n\r\n",
      rules("405/501, or 200 without Auth", ((405, 501), PASS),
            ("2xx", lambda r, s: WARN if b"secret-token-123" in r.body else PASS)),
      {"public": ("2xx|405|501",), "protected": ("400+close",)},
      differs="on the protected host the case's Authorization is a second credential beside "
              "the token every protected run carries: 400 by the duplicate-credential rule"),
    C("COMP-RANGE-INVALID", "RFC 9110 §14.2",
      "GET / HTTP/1.1\r\nHost: {H}\r\nRange: bytes=abc-xyz\r\n\r\n",
      rules("200 or 416", (lambda r, s: 200 <= r.status < 300 and r.status != 206, PASS),
            (416, PASS), default=WARN, none={"closed": WARN}), "2xx"),
    C("COMP-ACCEPT-NONSENSE", "RFC 9110 §12.5.1",
      "GET / HTTP/1.1\r\nHost: {H}\r\nAccept: application/x-nonsense\r\n\r\n",
      rules("406 or 2xx", (406, PASS), ("2xx", WARN), none={"closed": WARN}), "2xx"),
    C("COMP-POST-UNSUPPORTED-CT", "RFC 9110 §15.5.16",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\n"
      "Content-Type: application/x-nonsense\r\n\r\nhello",
      rules("415 or 2xx", (415, PASS), ("2xx", PASS), default=WARN, none={"closed": WARN}), "2xx"),
]

SMUGGLING = [
    C("SMUG-CL-TE-BOTH", "RFC 9112 §6.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: {CL}\r\nTransfer-Encoding: chunked\r\n\r\n"
      "D\r\nhello-bananas\r\n0\r\n\r\n", R400_OR_2XX, "400+close"),
    C("SMUG-DUPLICATE-CL", "RFC 9110 §8.6",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\nContent-Length: 10\r\n\r\nhelloworld",
      exact(400, close=True), "400+close"),
    C("SMUG-CL-LEADING-ZEROS", "RFC 9110 §8.6",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 005\r\n\r\nhello",
      R400_OR_2XX, "400+close|2xx",
      silent="1*DIGIT allows leading zeros; the SPEC's 'bad Content-Length' does not say"),
    C("SMUG-TE-XCHUNKED", "RFC 9112 §6.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n"
      "hello",
      R400_501, "400|501+close"),
    C("SMUG-TE-TRAILING-SPACE", "RFC 9112 §6.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked \r\nContent-Length: 5\r\n\r\n"
      "hello",
      rules("400/501 or 2xx+close", ((400, 501), PASS),
            ("2xx", lambda r, s: WARN if s.state == "closed" else FAIL)), "400|501+close"),
    C("SMUG-TE-SP-BEFORE-COLON", "RFC 9112 §5",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n"
      "hello",
      exact(400, close=True), "400+close"),
    C("SMUG-CL-NEGATIVE", "RFC 9110 §8.6",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: -1\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("SMUG-CLTE-PIPELINE", "RFC 9112 §6.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\n\r\n",
      rules("400 or close preferred; 2xx acceptable", (400, PASS),
            (lambda r, s: s.state == "closed", PASS), ("2xx", WARN)), "400+close"),
    C("SMUG-TECL-PIPELINE", "RFC 9112 §6.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n"
      "0\r\n\r\n",
      rules("400 or close preferred; 2xx acceptable", (400, PASS),
            (lambda r, s: s.state == "closed", PASS), ("2xx", WARN)), "400+close"),
    C("SMUG-CL-TRAILING-SPACE", "RFC 9110 §5.5",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5 \r\n\r\nhello",
      R400_OR_2XX, "2xx|400+close",
      silent="OWS after a field value is not part of it (RFC 9110 5.5); the SPEC does not say "
             "whether such a Content-Length is 'bad'"),
    C("SMUG-TE-DOUBLE-CHUNKED", "RFC 9112 §6.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked, chunked\r\n"
      "Content-Length: 5\r\n\r\nhello",
      R400_OR_2XX, "400+close"),
    C("SMUG-CL-EXTRA-LEADING-SP", "RFC 9110 §5.5",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length:  5\r\n\r\nhello",
      R400_OR_2XX, "2xx|400+close", silent="see SMUG-CL-TRAILING-SPACE"),
    C("SMUG-TE-CASE-MISMATCH", "RFC 9112 §6.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: Chunked\r\nContent-Length: 5\r\n\r\n"
      "hello",
      R400_OR_2XX, "400+close"),
    # ── Critical: Scored
    C("SMUG-CL-COMMA-DIFFERENT", "RFC 9110 §8.6",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5, 10\r\n\r\nhello",
      exact(400, close=True), "400+close"),
    C("SMUG-TE-NOT-FINAL-CHUNKED", "RFC 9112 §6.3",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
      exact(400, close=True), "400|501+close",
      differs="fastgw answers a transfer coding other than a single chunked with 501, while "
              "RFC 9112 6.3 (and Http11Probe) want 400 when chunked is not the final coding"),
    C("SMUG-TE-HTTP10", "RFC 9112 §6.1",
      "POST / HTTP/1.0\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
      "hello",
      exact(400, close=True), "400+close"),
    C("SMUG-CHUNK-BARE-SEMICOLON", "RFC 9112 §7.1.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5;\r\nhello\r\n0\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("SMUG-CHUNK-EXT-INVALID-TOKEN", "RFC 9112 §7.1.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5;bad[=x\r\nhello\r\n"
      "0\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("SMUG-BARE-CR-HEADER-VALUE", "RFC 9112 §2.2",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\nX-Test: val\rue\r\n\r\nhello",
      exact(400, close=True), "400+close"),
    C("SMUG-CL-OCTAL", "RFC 9110 §8.6",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 0o5\r\n\r\nhello",
      exact(400, close=True), "400+close"),
    C("SMUG-CHUNK-UNDERSCORE", "RFC 9112 §7.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n"
      "hello world!!!!!\r\n0\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("SMUG-TE-EMPTY-VALUE", "RFC 9112 §6.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: \r\nContent-Length: 5\r\n\r\nhello",
      exact(400, close=True), "400+close"),
    C("SMUG-TE-LEADING-COMMA", "RFC 9110 §5.6.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: , chunked\r\nContent-Length: 5\r\n\r\n"
      "hello",
      R400_OR_2XX, "400+close"),
    C("SMUG-TE-DUPLICATE-HEADERS", "RFC 9112 §6.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n"
      "Transfer-Encoding: identity\r\n"
      "Content-Length: 5\r\n\r\nhello", exact(400, close=True), "400+close"),
    C("SMUG-CHUNK-HEX-PREFIX", "RFC 9112 §7.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("SMUG-CHUNK-SIZE-PLUS", "RFC 9112 §7.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("SMUG-CHUNK-SIZE-TRAILING-OWS", "RFC 9112 §7.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("SMUG-CL-HEX-PREFIX", "RFC 9110 §8.6",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 0x5\r\n\r\nhello",
      exact(400, close=True), "400+close"),
    C("SMUG-CL-INTERNAL-SPACE", "RFC 9110 §8.6",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 1 0\r\n\r\n"
      "hello12345", exact(400, close=True),
      "400+close"),
    C("SMUG-CHUNK-LEADING-SP", "RFC 9112 §7.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("SMUG-CHUNK-MISSING-TRAILING-CRLF", "RFC 9112 §7.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello0\r\n\r\n",
      exact(400, close=True), "400+close"),
    # ── Funky chunks (2024–2025 research)
    C("SMUG-CHUNK-EXT-LF", "RFC 9112 §7.1.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5;\nhello\r\n0\r\n\r\n",
      R400_OR_2XX, "400+close"),
    C("SMUG-CHUNK-SPILL", "RFC 9112 §7.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello!!\r\n0\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("SMUG-CHUNK-LF-TERM", "RFC 9112 §7.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n",
      R400_OR_2XX, "400+close"),
    C("SMUG-CHUNK-EXT-CTRL", "RFC 9112 §7.1.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5;\0ext\r\nhello\r\n0\r\n"
      "\r\n",
      exact(400, close=True), "400+close"),
    C("SMUG-CHUNK-EXT-CR", "RFC 9112 §7.1.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5;a\rX\r\nhello\r\n0\r\n"
      "\r\n",
      exact(400, close=True), "400+close"),
    C("SMUG-TE-VTAB", "RFC 9112 §6.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: \x0bchunked\r\nContent-Length: 5\r\n\r\n"
      "hello",
      exact(400, close=True), "400+close"),
    C("SMUG-TE-FORMFEED", "RFC 9112 §6.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: \x0cchunked\r\nContent-Length: 5\r\n\r\n"
      "hello",
      exact(400, close=True), "400+close"),
    C("SMUG-TE-NULL", "RFC 9112 §6.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\0\r\nContent-Length: 5\r\n\r\n"
      "hello",
      exact(400, close=True), "400+close"),
    C("SMUG-CHUNK-LF-TRAILER", "RFC 9112 §7.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\n",
      R400_OR_2XX, "400+close|2xx",
      silent="a bare LF ending the chunked body's trailer section: the SPEC names bare LF only "
             "in the request line and header fields"),
    C("SMUG-TE-IDENTITY", "RFC 9112 §7",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\n"
      "hello",
      R400_501, "400|501+close"),
    C("SMUG-CHUNK-NEGATIVE", "RFC 9112 §7.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nhello\r\n0\r\n\r\n",
      exact(400, close=True), "400+close"),
    # ── Unscored
    C("SMUG-TRANSFER_ENCODING", "RFC 9112 §6.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
      "hello",
      R400_OR_2XX, "2xx|400+close",
      silent="Transfer_Encoding is an ordinary field name to llhttp; the invariant counts it "
             "upstream as a second framing field, as an upstream reading '_' as '-' would"),
    C("SMUG-CL-COMMA-SAME", "RFC 9110 §8.6",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5, 5\r\n\r\nhello",
      R400_OR_2XX, "400+close"),
    C("SMUG-CL-COMMA-TRIPLE", "RFC 9110 §8.6",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5, 5, 5\r\n\r\n"
      "hello", R400_OR_2XX, "400+close"),
    C("SMUG-CHUNKED-WITH-PARAMS", "RFC 9112 §7",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked;ext=val\r\nContent-Length: 5\r\n"
      "\r\nhello",
      R400_OR_2XX, "400+close"),
    C("SMUG-EXPECT-100-CL", "RFC 9110 §10.1.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
      R400_OR_2XX, "2xx"),
    # request trailers are dropped: never in the head, never as trailers; llhttp refuses
    # framing fields among them, which is as good
    C("SMUG-TRAILER-CL", "RFC 9110 §6.5.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
      "Content-Length: 50\r\n\r\n",
      R400_OR_2XX, "2xx|400+close"),
    C("SMUG-TRAILER-TE", "RFC 9110 §6.5.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
      "Transfer-Encoding: chunked\r\n\r\n", R400_OR_2XX, "2xx|400+close"),
    C("SMUG-TRAILER-HOST", "RFC 9110 §6.5.2",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
      "Host: evil.example.com\r\n\r\n", R400_OR_2XX, "2xx"),
    C("SMUG-TRAILER-AUTH", "RFC 9110 §6.5.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
      "Authorization: Bearer evil\r\n\r\n", R400_OR_2XX, "2xx"),
    C("SMUG-HEAD-CL-BODY", "RFC 9110 §9.3.2",
      "HEAD / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\n\r\nhello",
      R400_OR_2XX, "2xx"),
    C("SMUG-OPTIONS-CL-BODY", "RFC 9110 §9.3.7",
      "OPTIONS / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\n\r\nhello", R400_OR_2XX, "2xx"),
    # ── New smuggling tests
    C("SMUG-CL-UNDERSCORE", "RFC 9110 §8.6",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 1_0\r\n\r\n"
      "helloworld", exact(400, close=True),
      "400+close"),
    C("SMUG-CL-NEGATIVE-ZERO", "RFC 9110 §8.6",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: -0\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("SMUG-CL-DOUBLE-ZERO", "RFC 9110 §8.6",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 00\r\n\r\n",
      R400_OR_2XX, "400+close|2xx", silent="see SMUG-CL-LEADING-ZEROS"),
    C("SMUG-CL-LEADING-ZEROS-OCTAL", "RFC 9110 §8.6",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 0200\r\n\r\n" + "A" * 200, R400_OR_2XX,
      "400+close|2xx", silent="see SMUG-CL-LEADING-ZEROS"),
    C("SMUG-TE-OBS-FOLD", "RFC 9112 §5.2",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n\r\n"
      "hello",
      rules("400 or 2xx+close", (400, PASS),
            ("2xx", lambda r, s: WARN if s.state == "closed" else FAIL)), "400+close"),
    C("SMUG-TE-TRAILING-COMMA", "RFC 9110 §5.6.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked,\r\nContent-Length: 5\r\n\r\n"
      "hello",
      R400_OR_2XX, "400+close"),
    C("SMUG-TE-TAB-BEFORE-VALUE", "RFC 9110 §5.5",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding:\tchunked\r\nContent-Length: 5\r\n\r\n"
      "hello",
      R400_OR_2XX, "400+close"),
    # absolute-form: the target's authority is the host routed on, and no service has it
    C("SMUG-ABSOLUTE-URI-HOST-MISMATCH", "RFC 9112 §3.2.2",
      "GET http://other.example.com/ HTTP/1.1\r\nHost: {H}\r\n\r\n", R400_OR_2XX, "404",
      differs="absolute-form's authority is the host (RFC 9112 3.2.2), and no service has "
              "other.example.com: SPEC 3's 404, not 400 or a 2xx from the Host field's service"),
    C("SMUG-MULTIPLE-HOST-COMMA", "RFC 9110 §7.2",
      "GET / HTTP/1.1\r\nHost: {H}, other.example.com\r\n"
      "\r\n", exact(400, close=True), "400+close"),
    C("SMUG-CHUNK-BARE-CR-TERM", "RFC 9112 §2.2",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\rhello\r\n0\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("SMUG-TRAILER-CONTENT-TYPE", "RFC 9110 §6.5.1",
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
      "Content-Type: text/evil\r\n\r\n", R400_OR_2XX, "2xx"),
    # ── Sequence tests
    C("SMUG-CLTE-CONN-CLOSE", "RFC 9112 §6.1",
      ["POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
       "0\r\n\r\n", GET],
      seq_must_close(), "400+close"),
    C("SMUG-TECL-CONN-CLOSE", "RFC 9112 §6.1",
      ["POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
       "0\r\n\r\n", GET],
      seq_must_close(), "400+close"),
    C("SMUG-CLTE-DESYNC", "RFC 9112 §6.1",
      ["POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
       "0\r\n\r\nX", GET],
      seq_must_close("400, or close"), "400+close"),
    C("SMUG-CLTE-SMUGGLED-GET", "RFC 9112 §6.1",
      ["POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: {CL}\r\nTransfer-Encoding: chunked\r\n"
       "\r\n" + SMUGGLED_GET],
      seq_no_extra_response(), "400+close"),
    C("SMUG-CLTE-SMUGGLED-GET-CL-PLUS", "RFC 9112 §6.1",
      ["POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: +{CL}\r\nTransfer-Encoding: chunked\r\n"
       "\r\n" + SMUGGLED_GET],
      seq_no_extra_response(), "400+close"),
    C("SMUG-CLTE-SMUGGLED-GET-CL-NON-NUMERIC", "RFC 9112 §6.1",
      ["POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: {CL}x\r\nTransfer-Encoding: chunked\r\n"
       "\r\n" + SMUGGLED_GET],
      seq_no_extra_response(), "400+close"),
    C("SMUG-CLTE-SMUGGLED-GET-TE-OBS-FOLD", "RFC 9112 §5.2",
      ["POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: {CL}\r\n"
       "\r\n" + SMUGGLED_GET],
      seq_no_extra_response(), "400+close"),
    C("SMUG-CLTE-SMUGGLED-HEAD", "RFC 9112 §6.1",
      ["POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: {CL}\r\nTransfer-Encoding: chunked\r\n\r\n"
       "0\r\n\r\nHEAD / HTTP/1.1\r\nHost: {H}\r\n\r\n"], seq_no_extra_response(), "400+close"),
    C("SMUG-CLTE-SMUGGLED-GET-TE-TRAILING-SPACE", "RFC 9112 §6.1",
      ["POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: {CL}\r\nTransfer-Encoding: chunked \r\n"
       "\r\n" + SMUGGLED_GET],
      seq_no_extra_response(), "400+close"),
    C("SMUG-CLTE-SMUGGLED-GET-TE-LEADING-COMMA", "RFC 9112 §6.1",
      ["POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: {CL}\r\nTransfer-Encoding: , chunked\r\n"
       "\r\n" + SMUGGLED_GET],
      seq_no_extra_response(), "400+close"),
    C("SMUG-CLTE-SMUGGLED-GET-TE-CASE-MISMATCH", "RFC 9112 §6.1",
      ["POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: {CL}\r\nTransfer-Encoding: Chunked\r\n"
       "\r\n" + SMUGGLED_GET],
      seq_no_extra_response(), "400+close"),
    C("SMUG-TE-DUPLICATE-HEADERS-SMUGGLED-GET", "RFC 9112 §6.1",
      ["POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n"
       "Transfer-Encoding: identity\r\n"
       "Content-Length: {CL}\r\n\r\n" + SMUGGLED_GET], seq_no_extra_response(), "400+close"),
    C("SMUG-TECL-SMUGGLED-GET", "RFC 9112 §6.1", [tecl_smuggled_get], seq_no_extra_response(),
      "400+close"),
    C("SMUG-DUPLICATE-CL-SMUGGLED-GET", "RFC 9110 §8.6",
      ["POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 4\r\nContent-Length: {CL}\r\n\r\n"
       "PINGGET / HTTP/1.1\r\nHost: {H}\r\n\r\n"], seq_no_extra_response(), "400+close"),
    C("SMUG-GET-CL-PREFIX-DESYNC", "RFC 9110 §9.3.1",
      ["GET / HTTP/1.1\r\nHost: {H}\r\nContent-Length: {CL}\r\n\r\nGET / HTTP/1.1\r\nHost: {H}\r\n",
       "\r\nGET / HTTP/1.1\r\nHost: {H}\r\n\r\n"],
      seq_unread_body("400/close preferred; extra response on step 2 = warn", step2_400=PASS,
                      step2_multi=WARN, otherwise=WARN), "2xx", "2xx"),
    C("SMUG-TECL-DESYNC", "RFC 9112 §6.1",
      ["POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n"
       "0\r\n\r\nX", GET],
      seq_must_close("400, or close"), "400+close"),
    # "X" after a body of 0 bytes starts the next request: a poisoned one, refused
    C("SMUG-CL0-BODY-POISON", "RFC 9112 §6.2",
      ["POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 0\r\n\r\nX", GET], seq_cl0_poison(),
      "2xx", "400+close"),
    C("SMUG-GET-CL-BODY-DESYNC", "RFC 9110 §9.3.1",
      ["GET / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\n\r\nhello", GET], seq_unread_body(),
      "2xx", "2xx"),
    C("SMUG-OPTIONS-CL-BODY-DESYNC", "RFC 9110 §9.3.7",
      ["OPTIONS / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\n\r\nhello", GET], seq_unread_body(),
      "2xx", "2xx"),
    C("SMUG-EXPECT-100-CL-DESYNC", "RFC 9110 §10.1.1",
      ["POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
       "hello", GET],
      seq_unread_body("417/400/close preferred; poisoned follow-up = warn", first_ok=(400, 417),
                      otherwise=WARN),
      "2xx", "2xx"),
    C("SMUG-OPTIONS-TE-OBS-FOLD", "RFC 9112 §5.2",
      ["OPTIONS / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n"
       "\r\nhello", GET],
      seq_must_close(), "400+close"),
    C("SMUG-CHUNK-INVALID-SIZE-DESYNC", "RFC 9112 §7.1",
      ["POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n+0\r\n\r\nX", GET],
      seq_must_close("400, or close"), "400+close"),
    C("SMUG-PIPELINE-SAFE", "RFC 9112 §9.3", [GET, GET], seq_pipeline_safe(), "2xx", "2xx"),
]

MALFORMED = [
    C("MAL-BINARY-GARBAGE", None, dotnet_random_bytes(42, 256).decode("latin-1"), R400_QUIET,
      "400+close|none"),
    C("MAL-LONG-URL", None, "GET /" + "A" * 100_000 + " HTTP/1.1\r\nHost: {H}\r\n\r\n",
      rules("400/414/431 or close", ((400, 414, 431), PASS)), "431"),
    C("MAL-LONG-HEADER-VALUE", None,
      "GET / HTTP/1.1\r\nHost: {H}\r\nX-Big: " + "B" * 100_000 + "\r\n\r\n",
      rules("400/431 or close", ((400, 431), PASS)), "431"),
    C("MAL-MANY-HEADERS", None,
      "GET / HTTP/1.1\r\n"
      "Host: {H}\r\n" + "".join(f"X-H-{i}: value\r\n" for i in range(10_000)) + "\r\n",
      rules("400/431 or close", ((400, 431), PASS)), "431"),
    C("MAL-NUL-IN-URL", None, "GET /\0test HTTP/1.1\r\nHost: {H}\r\n\r\n", exact(400, close=True),
      "400+close"),
    # C#'s "\x0Bdef" is one escape, U+0BDE, then "f"; Encoding.ASCII sends it as "?f"
    C("MAL-CONTROL-CHARS-HEADER", None,
      "GET / HTTP/1.1\r\nHost: {H}\r\nX-Test: abc\x07\x08?f\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("MAL-INCOMPLETE-REQUEST", None, "GET / HTTP/1.1\r\nHost: {H}\r\nX-Test: value", R400_QUIET,
      "none|400+close"),
    C("MAL-EMPTY-REQUEST", None, "", R400_QUIET, "none|400+close"),
    C("MAL-LONG-HEADER-NAME", None,
      "GET / HTTP/1.1\r\nHost: {H}\r\n" + "A" * 100_000 + ": val\r\n\r\n",
      rules("400/431 or close", ((400, 431), PASS)), "431"),
    C("MAL-LONG-METHOD", None, "A" * 100_000 + " / HTTP/1.1\r\nHost: {H}\r\n\r\n",
      rules("400 or close", (400, PASS)), "400+close"),
    C("MAL-NON-ASCII-HEADER-NAME", None,
      "GET / HTTP/1.1\r\nHost: {H}\r\nX-T\xc3\xabst: value\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("MAL-NON-ASCII-URL", None, "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: {H}\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("MAL-CL-OVERFLOW", None,
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 99999999999999999999\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("MAL-WHITESPACE-ONLY-LINE", None, "   \r\n\r\n", R400_QUIET, "400+close|none"),
    C("MAL-NUL-IN-HEADER-VALUE", None, "GET / HTTP/1.1\r\nHost: {H}\r\nX-Test: val\0ue\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("MAL-CHUNK-SIZE-OVERFLOW", None,
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF0\r\n"
      "hello\r\n0\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("MAL-H2-PREFACE", None, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
      rules("400/505/close/timeout", ((400, 505), PASS), none=QUIET_PASS),
      "400+close"),  # llhttp stops at the HTTP/2 preface with an error of its own
    C("MAL-CL-EMPTY", "RFC 9110 §8.6", "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: \r\n\r\n",
      exact(400, close=True), "400+close"),
    C("MAL-CL-TAB-BEFORE-VALUE", "RFC 9110 §5.5",
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length:\t5\r\n\r\nhello",
      R400_OR_2XX, "2xx|400+close", silent="see SMUG-CL-TRAILING-SPACE"),
    # ── New malformed input tests
    C("MAL-URL-BACKSLASH", None, "GET /path\\file HTTP/1.1\r\nHost: {H}\r\n\r\n",
      rules("400 or 2xx/404", (400, PASS), (lambda r, s: 200 <= r.status < 500, WARN)),
      "400+close|2xx", silent="whether a backslash in a path is refused is not in the SPEC"),
    C("MAL-URL-OVERLONG-UTF8", None, "GET /\xc0\xaf HTTP/1.1\r\nHost: {H}\r\n\r\n",
      exact(400, close=True), "400+close"),
    C("MAL-URL-PERCENT-NULL", None, "GET /path%00.html HTTP/1.1\r\nHost: {H}\r\n\r\n",
      rules("400 or 2xx/404", (400, PASS), (lambda r, s: 200 <= r.status < 500, WARN)),
      "2xx|400+close"),
    C("MAL-URL-PERCENT-CRLF", None,
      "GET /path%0d%0aX-Injected:%20true HTTP/1.1\r\nHost: {H}\r\n\r\n",
      rules("400 or 2xx/404", (400, PASS), (lambda r, s: 200 <= r.status < 500, WARN)),
      "2xx|400+close"),
    C("MAL-CHUNK-EXT-64K", None,
      "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=" + "a" * 65_536 +
      "\r\nhello\r\n0\r\n\r\n",
      rules("400 or 2xx", ((400, 431), PASS), ("2xx", WARN)), "2xx|400+close|431",
      silent="a limit on chunk extensions is not in the SPEC"),
    C("MAL-RANGE-OVERLAPPING", None,
      "GET / HTTP/1.1\r\nHost: {H}\r\nRange: bytes=" + ",".join(["0-"] * 1000) + "\r\n\r\n",
      rules("200/206/400/416", ((200, 206, 400, 416, 431), WARN)), "2xx"),
    C("MAL-POST-CL-HUGE-NO-BODY", None,
      "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 999999999\r\n\r\n",
      R400_QUIET, "413",
      differs="the announced body is over the body limit: SPEC 5 answers 413 at once"),
]

NORMALIZATION = [
    C("NORM-UNDERSCORE-CL", None,
      "POST /echo HTTP/1.1\r\nHost: {H}\r\nContent-Length: 11\r\nContent_Length: 99\r\n\r\n"
      "hello world",
      normalization(b"Content-Length", b"Content_Length", b"99"), "2xx|400+close"),
    C("NORM-SP-BEFORE-COLON-CL", "RFC 9112 §5",
      "POST /echo HTTP/1.1\r\nHost: {H}\r\nContent-Length: 11\r\nContent-Length : 5\r\n\r\n"
      "hello world",
      normalization(b"Content-Length", b"Content-Length ", b"5"), "400+close"),
    C("NORM-TAB-IN-NAME", None,
      "POST /echo HTTP/1.1\r\nHost: {H}\r\nContent-Length: 11\r\nContent\tLength: 99\r\n\r\n"
      "hello world",
      normalization(b"Content-Length", b"Content\tLength", b"99"), "400+close"),
    C("NORM-CASE-TE", None,
      "POST /echo HTTP/1.1\r\nHost: {H}\r\nContent-Length: 11\r\nTRANSFER-ENCODING: chunked\r\n"
      "\r\nhello world",
      case_normalization(b"Transfer-Encoding", b"TRANSFER-ENCODING", b"chunked"), "400+close"),
    C("NORM-UNDERSCORE-TE", None,
      "POST /echo HTTP/1.1\r\nHost: {H}\r\nContent-Length: 11\r\nTransfer_Encoding: chunked\r\n"
      "\r\nhello world",
      normalization(b"Transfer-Encoding", b"Transfer_Encoding", b"chunked"), "2xx|400+close"),
]

# The upstream sends neither ETag nor Last-Modified, so each probe's conditional request
# is its no-validator one ("no-etag" etc., as Http11Probe sends then); fastgw only relays.
KEEP_ALIVE_GET = "GET / HTTP/1.1\r\nHost: {H}\r\nConnection: keep-alive\r\n\r\n"
ORIGIN = "conditional requests are the upstream's to answer; fastgw relays them"
CAPABILITIES = [
    C("CAP-ETAG-304", "RFC 9110 §13.1.2",
      [KEEP_ALIVE_GET, 'GET / HTTP/1.1\r\nHost: {H}\r\nIf-None-Match: "no-etag"\r\n\r\n'],
      seq_conditional("304", None, PASS), "2xx", "2xx", silent=ORIGIN),
    C("CAP-LAST-MODIFIED-304", "RFC 9110 §13.1.3",
      [KEEP_ALIVE_GET,
       "GET / HTTP/1.1\r\nHost: {H}\r\nIf-Modified-Since: Thu, 01 Jan 2099 00:00:00 GMT\r\n\r\n"],
      seq_conditional("304", None, PASS), "2xx", "2xx", silent=ORIGIN),
    C("CAP-ETAG-IN-304", "RFC 9110 §15.4.5",
      [KEEP_ALIVE_GET, 'GET / HTTP/1.1\r\nHost: {H}\r\nIf-None-Match: "no-etag"\r\n\r\n'],
      seq_conditional("304 with ETag", None, PASS), "2xx", "2xx", silent=ORIGIN),
    C("CAP-INM-PRECEDENCE", "RFC 9110 §13.1.2",
      [KEEP_ALIVE_GET, 'GET / HTTP/1.1\r\nHost: {H}\r\nIf-None-Match: "no-etag"\r\n'
                       "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\n"],
      seq_conditional("304", None, PASS), "2xx", "2xx", silent=ORIGIN),
    C("CAP-INM-WILDCARD", "RFC 9110 §13.1.2",
      [KEEP_ALIVE_GET, "GET / HTTP/1.1\r\nHost: {H}\r\nIf-None-Match: *\r\n\r\n"],
      seq_conditional("304", WARN, PASS), "2xx", "2xx", silent=ORIGIN),
    C("CAP-IMS-FUTURE", "RFC 9110 §13.1.3",
      [KEEP_ALIVE_GET,
       "GET / HTTP/1.1\r\nHost: {H}\r\nIf-Modified-Since: Thu, 01 Jan 2099 00:00:00 GMT\r\n\r\n"],
      seq_conditional("200", PASS, WARN), "2xx", "2xx", silent=ORIGIN),
    C("CAP-IMS-INVALID", "RFC 9110 §13.1.3",
      [KEEP_ALIVE_GET, "GET / HTTP/1.1\r\nHost: {H}\r\nIf-Modified-Since: not-a-date\r\n\r\n"],
      seq_conditional("200", PASS, WARN), "2xx", "2xx", silent=ORIGIN),
    C("CAP-INM-UNQUOTED", "RFC 9110 §8.8.3",
      [KEEP_ALIVE_GET, "GET / HTTP/1.1\r\nHost: {H}\r\nIf-None-Match: no-etag\r\n\r\n"],
      seq_conditional("200", None, WARN), "2xx", "2xx", silent=ORIGIN),
    C("CAP-ETAG-WEAK", "RFC 9110 §13.1.2",
      [KEEP_ALIVE_GET, 'GET / HTTP/1.1\r\nHost: {H}\r\nIf-None-Match: W/"no-etag"\r\n\r\n'],
      seq_conditional("304", None, PASS), "2xx", "2xx", silent=ORIGIN),
]

COOKIES = [
    C("COOK-ECHO", None, "GET /echo HTTP/1.1\r\nHost: {H}\r\nCookie: foo=bar\r\n\r\n",
      upstream_has("2xx with Cookie upstream", (b"cookie", b"foo=bar")), "2xx"),
    C("COOK-OVERSIZED", None,
      "GET /echo HTTP/1.1\r\nHost: {H}\r\nCookie: big=" + "A" * 65_536 + "\r\n\r\n",
      rules("400/431 (rejected) or 2xx (survived)", ((400, 431), PASS), ("2xx", PASS)), "431"),
    C("COOK-EMPTY", None, "GET /echo HTTP/1.1\r\nHost: {H}\r\nCookie: \r\n\r\n",
      rules("2xx or 400", (lambda r, s: 200 <= r.status < 300 or r.status == 400, PASS)), "2xx"),
    C("COOK-NUL", None, "GET /echo HTTP/1.1\r\nHost: {H}\r\nCookie: foo=\0bar\r\n\r\n",
      rules("400 (rejected) or 2xx without NUL", (400, PASS), ("2xx", PASS)), "400+close"),
    C("COOK-CONTROL-CHARS", None,
      "GET /echo HTTP/1.1\r\nHost: {H}\r\nCookie: foo=\x01\x02\x03\r\n\r\n",
      rules("400 (rejected) or 2xx without control chars", (400, PASS), ("2xx", PASS)),
      "400+close"),
    C("COOK-MANY-PAIRS", None,
      "GET /echo HTTP/1.1\r\nHost: {H}\r\n"
      "Cookie: " + "; ".join(f"k{i}=v{i}" for i in range(1000)) + "\r\n\r\n",
      rules("2xx or 400/431", (lambda r, s: 200 <= r.status < 300 or r.status in (400, 431), PASS)),
      "2xx"),
    C("COOK-MALFORMED", None, "GET /echo HTTP/1.1\r\nHost: {H}\r\nCookie: ===;;;\r\n\r\n",
      rules("2xx or 400", (lambda r, s: 200 <= r.status < 300 or r.status == 400, PASS)), "2xx"),
    C("COOK-MULTI-HEADER", None,
      "GET /echo HTTP/1.1\r\nHost: {H}\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
      upstream_has("2xx with both cookies", (b"cookie", b"a=1"), (b"cookie", b"b=2"), on_400=WARN),
      "2xx"),
    C("COOK-PARSED-BASIC", None, "GET /cookie HTTP/1.1\r\nHost: {H}\r\nCookie: foo=bar\r\n\r\n",
      upstream_has("2xx with foo=bar upstream", (b"cookie", b"foo=bar"), on_400=WARN, on_404=WARN),
      "2xx"),
    C("COOK-PARSED-MULTI", None,
      "GET /cookie HTTP/1.1\r\nHost: {H}\r\nCookie: a=1; b=2; c=3\r\n\r\n",
      upstream_has("2xx with a=1, b=2, c=3 upstream", (b"cookie", b"a=1"), (b"cookie", b"b=2"),
                   (b"cookie", b"c=3"), on_400=WARN, on_404=WARN), "2xx"),
    C("COOK-PARSED-EMPTY-VAL", None, "GET /cookie HTTP/1.1\r\nHost: {H}\r\nCookie: foo=\r\n\r\n",
      NO_CRASH, "2xx"),
    C("COOK-PARSED-SPECIAL", None,
      "GET /cookie HTTP/1.1\r\nHost: {H}\r\nCookie: a=hello world; b=x=y\r\n\r\n",
      NO_CRASH, "2xx"),
]

CASES = COMPLIANCE + SMUGGLING + MALFORMED + NORMALIZATION + CAPABILITIES + COOKIES
assert len(CASES) == 215 and len({c.id for c in CASES}) == 215


PARAMS = [pytest.param(case, variant, id=f"{case.id}-{variant}")
          for case in CASES for variant in (("public", "protected") if case.names_host()
                                            else ("any",))]


@pytest.mark.parametrize("case,variant", PARAMS)
def test_http11probe_case(edge, case, variant):
    ex = edge.exchange(*case.render(variant, edge.token), expect="one", deadline=case.deadline)
    problems = [f"invariant: {p}" for p in edge.violations(ex)]
    mismatch = answers_mismatch(case.expected(variant), ex)
    if mismatch:
        problems.append(f"fastgw: {mismatch} (expected {' then '.join(case.expected(variant))})")
    verdict = case.probe.judge(seen(ex))
    if case.differs or case.silent:
        if verdict != PASS:
            warnings.warn(ProbeVerdict(f"{case.id}: Http11Probe says {verdict} ("
                                       f"{case.probe.description}); {case.differs or case.silent}"))
    elif verdict == FAIL:
        problems.append(f"Http11Probe ({case.rfc or 'no RFC reference'}): fail, expected "
                        f"{case.probe.description}")
    if problems:
        pytest.fail("\n- ".join([f"{case.id} ({variant}):"] + problems) + "\n" + ex.describe(),
                    pytrace=False)
