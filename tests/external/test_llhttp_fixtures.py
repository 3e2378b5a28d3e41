"""llhttp's own request fixtures, run against the llhttp that httptools bundles.

fastgw parses client requests with ``httptools.HttpRequestParser`` in its
default (strict) mode, and relies on that strictness: a request that one hop
reads differently from the next is a request-smuggling hole.  This module pins
the parser's behaviour so that an httptools upgrade which changes it fails the
suite instead of passing unnoticed.

Where the cases come from
-------------------------
- repository: nodejs/llhttp (https://github.com/nodejs/llhttp)
- path:       ``test/request/*.md``
- commit:     01e105a30fd06e248bc8ac73c4adb34a63d4114a (tag v9.4.2)
- licence:    MIT, "Copyright (c) 2018 Fedor Indutny"; the licence text goes
  with the fixture files, as ``LICENSE`` beside their ``request/`` folder.

httptools 0.9.0 bundles llhttp 9.4.3 (``vendor/llhttp/include/llhttp.h`` in
its sdist).  The fixtures are those of 9.4.2: from 9.4.2 to 9.4.3 the generated
parser changed in one place only, an empty ``Transfer-Encoding`` value is now
refused ("Empty Transfer-Encoding"), and ``test_empty_transfer_encoding_refused``
below covers that.  ``test_bundled_llhttp_is_the_synced_one`` fails as soon as
another httptools is installed, with what to do.

The fixture files are kept outside this repository, in the ``llhttp`` data set
(``tests/external/external_data.py`` says where those are looked for); without it, the
fixture cases are skipped (a single skip points here), while the version pin and
the strictness tests at the end run regardless.

Each file's SHA-256 is checked against the pinned commit, so a folder with
other versions of them fails instead of testing something else.  To make such
a folder from a clone of nodejs/llhttp::

    mkdir -p DIR/request
    git show 01e105a3:LICENSE > DIR/LICENSE
    for f in $(git ls-tree --name-only 01e105a3 test/request/); do
        git show 01e105a3:$f > DIR/request/$(basename $f); done

How a fixture is read
---------------------
The conventions are those of llhttp's harness (``test/md-test.ts`` with
llparse-test-fixture): each heading with an ``http`` code block is one case;
the ``<!-- meta={...} -->`` comment before the block gives its ``type``
(``request``, ``request-lenient-<flag>``, ``request-finish``, ...) and options
(``noScan``, ``pause``, ``skipBody``).  The input has its last newline removed,
backslash-newline joins lines, every newline becomes CRLF, then ``\\r \\n \\t
\\f \\xHH \\OOO`` are unescaped and the text is encoded as UTF-8.  The ``log``
block lists the callbacks; spans that the harness split at CR/LF or at chunk
boundaries are joined again.

What is compared
----------------
httptools does not expose every llhttp callback, so the log is reduced to what
an httptools protocol object sees, in order: message begin, the URL, each
(name, value) header pair (httptools reports a header when the next header
field or the end of the head arrives, and the reduction follows that rule),
headers complete with the method and HTTP version, body bytes, chunk header and
chunk complete (without the chunk length, which httptools does not pass),
message complete, and how parsing ended: without error, with
``HttpParserUpgrade`` at the logged offset (llhttp's error 22, "Pause on
CONNECT/Upgrade"), or with the ``HttpParserError`` subclass for the logged
error code and the logged reason as its message.  Each case is fed whole and,
unless the fixture says ``noScan``, also one byte at a time, as llhttp's
harness feeds every chunk size.

``pause`` lines are dropped: there the harness's callback returned
HPE_PAUSED and the harness resumed at once, which changes nothing in what is
parsed.  Lenient types are run with ``set_dangerous_leniencies``; a case that
needs what httptools cannot do is skipped, with the reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import httptools
import pytest
from .external_data import dataset
from httptools import (HttpParserCallbackError, HttpParserError, HttpParserInvalidMethodError,
                       HttpParserInvalidStatusError, HttpParserInvalidURLError, HttpParserUpgrade)


# httptools release -> the llhttp version vendored in it.  Reading it at run time
# is not possible: the compiled parser carries no version string, and the wheel
# ships no llhttp header.
BUNDLED_LLHTTP = {"0.9.0": "9.4.3"}
SYNCED_HTTPTOOLS = "0.9.0"
FIXTURES_COMMIT = "01e105a30fd06e248bc8ac73c4adb34a63d4114a"
FIXTURES_TAG = "v9.4.2"

FIXTURE_SHA256 = {
    "connection.md": "5d8711f1974be9ef20fe107ea5cfbad177cd65ae35f46a79fb1f1b89e1442d61",
    "content-length.md": "2abc43fd03e065088e257c254a6c4be010eb00692986421693be6ffd4413c2c7",
    "finish.md": "5452c241cedb1a2ca19029c1ab55a7787d0f0e93e06ceb526cc28f3650d8c781",
    "invalid.md": "a52327639eea2704f07dff0a5e557a39582c2b88627f07452c58e186e120a866",
    "lenient-header-value-relaxed.md":
        "37d30579c6436550ff0932d819be7af8b1e139445a9f0c5f0da8694c9cae8e50",
    "lenient-headers.md": "15954dcd89c8d2ef0152853e94cec4f8eb8e65be574008173af1534b589370b0",
    "lenient-version.md": "11e92e3651ea89a7e8c13fba04e22abbfe9f30a2309b9c06726fd6ce8b769813",
    "method.md": "5f797f7e06a111f46a9d45dbb5220a8f7a5bcfe0e908421778dc69d9ccac6041",
    "pausing.md": "53d0fa6849825190ea7144af045eab2738ab81a1881d7b1cb6ccba1d3bd92c48",
    "pipelining.md": "8df1c96570df60c42fe9847091ee3079a48dd0062ae20da854ecde1ff102214c",
    "sample.md": "385a56ab78354efaab2ee752e90251a86565ebf988e2cf4e144cf302e0809c73",
    "transfer-encoding.md": "0e163607c84f29b1c52c9faa43e9ad33320f363421080f3ebf27f09e97987b57",
    "uri.md": "95102eebcecdb3c1786f0d7c155bf1f00bc264c61f025a7e7548140757802a6e",
}

RESYNC = (f"The llhttp fixtures here are those of nodejs/llhttp {FIXTURES_TAG} "
          f"({FIXTURES_COMMIT}), checked against httptools {SYNCED_HTTPTOOLS} "
          f"(llhttp {BUNDLED_LLHTTP[SYNCED_HTTPTOOLS]}).  Re-sync them: take test/request/*.md "
          "from the llhttp tag that the new httptools vendors (its sdist has "
          "vendor/llhttp/include/llhttp.h), update FIXTURE_SHA256, FIXTURES_COMMIT, "
          "BUNDLED_LLHTTP and SYNCED_HTTPTOOLS in this file, and look at every case "
          "that changes.")


# --- where the fixture files are -------------------------------------------------

def fixture_dir() -> Path | None:
    folder = dataset("llhttp")
    return folder if folder is not None and (folder / "request").is_dir() else None


FIXTURE_DIR = fixture_dir()


# --- reading the markdown ---------------------------------------------------------

@dataclass
class Case:
    file: str
    title: str
    line: int
    meta: dict
    raw_input: str
    raw_log: str

    @property
    def id(self) -> str:
        return f"{self.file}::{self.title}"


HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
META = re.compile(r"<!--\s*meta=(\{.*\})\s*-->")


def read_cases(path: Path) -> list[Case]:
    """Cases of one fixture file: each heading that has an ``http`` and a ``log`` block."""
    lines = path.read_text(encoding="utf-8").split("\n")
    cases: list[Case] = []
    title, title_line, meta = None, 0, None
    blocks: dict[str, str] = {}
    block_meta: dict | None = None

    def close_section():
        if "http" in blocks:
            assert "log" in blocks, f"{path.name}:{title_line + 1}: http block without a log"
            cases.append(Case(path.name, title, title_line + 1, block_meta or {},
                              blocks["http"], blocks["log"]))

    i = 0
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"^```(\w*)\s*$", line)
        if fence:
            kind = fence.group(1)
            body = []
            i += 1
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if kind in ("http", "log"):
                assert kind not in blocks, f"{path.name}:{i}: two {kind} blocks in one case"
                # A code block's text, as the harness gets it, ends with a newline.
                blocks[kind] = "\n".join(body) + "\n"
                if kind == "http":
                    block_meta = meta
                meta = None
            i += 1
            continue
        heading = HEADING.match(line)
        setext = (i + 1 < len(lines) and line.strip()
                  and re.match(r"^(=+|-+)\s*$", lines[i + 1]))
        if heading or setext:
            close_section()
            blocks, block_meta = {}, None
            title = heading.group(2) if heading else line.strip()
            title_line = i
            i += 1 if heading else 2
            continue
        m = META.search(line)
        if m:
            meta = json.loads(m.group(1))
        i += 1
    close_section()

    seen: dict[str, int] = {}
    for case in cases:
        seen[case.title] = seen.get(case.title, 0) + 1
    for case in cases:
        if seen[case.title] > 1:
            case.title = f"{case.title} (line {case.line})"
    return cases


def decode_input(text: str) -> bytes:
    """The bytes the harness hands to the parser for an ``http`` block."""
    text = re.sub(r"\n\Z", "", text)
    text = re.sub(r"\\(\r\n|\r|\n)", "", text)
    text = re.sub(r"\r\n|\r|\n", "\r\n", text)
    text = text.replace("\\r", "\r").replace("\\n", "\n")
    text = text.replace("\\t", "\t").replace("\\f", "\f")
    text = re.sub(r"\\x([0-9a-fA-F]+)", lambda m: chr(int(m.group(1), 16) & 0xFFFF), text)
    text = re.sub(r"\\([0-7]{1,3})", lambda m: chr(int(m.group(1), 8)), text)
    data = text.encode("utf-8")
    # The harness passes the input as a C string.
    return data.split(b"\0", 1)[0]


# --- a log reduced to what httptools reports --------------------------------------

@dataclass
class Outcome:
    events: list[tuple]
    error: tuple | None          # ("upgrade", offset) or ("error", exception class, reason)


ERROR_CLASSES = {6: HttpParserInvalidMethodError, 7: HttpParserInvalidURLError,
                 13: HttpParserInvalidStatusError, 22: HttpParserUpgrade}
ERROR_CLASSES.update(dict.fromkeys((16, 17, 18, 19, 20, 24), HttpParserCallbackError))

SPAN = re.compile(r'^len=(\d+) span\[([^\]]+)\]=(?:"(.*)"|(cr|lf))$')
IGNORED = {"method complete", "url complete", "protocol complete", "version complete",
           "header_field complete", "header_value complete", "pause", "reset",
           "chunk_extension_name complete", "chunk_extension_value complete"}
IGNORED_SPANS = {"protocol", "version", "chunk_extension_name", "chunk_extension_value"}


def add_data(events: list[tuple], kind: str, data: bytes) -> None:
    """Data callbacks in a row are one value: llhttp and httptools both split them freely."""
    if events and events[-1][0] == kind:
        events[-1] = (kind, events[-1][1] + data)
    else:
        events.append((kind, data))


def expected_outcome(raw_log: str) -> Outcome:
    text = raw_log.replace("\\t", "\t").replace("\\f", "\f")
    events: list[tuple] = []
    error = None
    method = b""
    field: bytes | None = None
    value: bytes | None = None

    def emit_header():
        nonlocal field, value
        if value is not None:
            events.append(("header", field, value))
            field = value = None

    for line in text.split("\n")[:-1]:
        m = re.match(r"^off=(\d+|NULL) (.*)$", line)
        assert m, f"unexpected log line {line!r}"
        off, entry = m.group(1), m.group(2)
        assert error is None, f"log goes on after the error: {line!r}"
        span = SPAN.match(entry)
        if span:
            name = span.group(2)
            if span.group(4):
                data = b"\r" if span.group(4) == "cr" else b"\n"
            else:
                data = span.group(3).encode("utf-8")
            assert len(data) == int(span.group(1)), f"span length differs: {line!r}"
            if name == "method":
                method += data
            elif name == "url":
                add_data(events, "url", data)
            elif name == "header_field":
                emit_header()
                field = (field or b"") + data
            elif name == "header_value":
                value = (value or b"") + data
            elif name == "body":
                add_data(events, "body", data)
            else:
                assert name in IGNORED_SPANS, f"unknown span {line!r}"
            continue
        if entry == "message begin":
            events.append(("begin",))
            method = b""
        elif entry.startswith("headers complete "):
            emit_header()
            v = re.search(r" v=(\d+)/(\d+) ", entry)
            events.append(("headers_complete", method, f"{v.group(1)}.{v.group(2)}"))
        elif entry.startswith("chunk header len="):
            events.append(("chunk_header",))
        elif entry == "chunk complete":
            emit_header()
            events.append(("chunk_complete",))
        elif entry == "message complete":
            events.append(("message_complete",))
        elif entry.startswith("error code="):
            e = re.match(r'^error code=(\d+) reason="(.*)"$', entry)
            code, reason = int(e.group(1)), e.group(2)
            if code == 22:
                error = ("upgrade", int(off))
            else:
                error = ("error", ERROR_CLASSES.get(code, HttpParserError), reason)
        else:
            assert entry in IGNORED, f"unknown log line {line!r}"
    return Outcome(events, error)


# --- running httptools -------------------------------------------------------------

class Recorder:
    """An httptools protocol that writes down every callback."""

    def __init__(self):
        self.events: list[tuple] = []
        self.parser: httptools.HttpRequestParser | None = None

    def on_message_begin(self):
        self.events.append(("begin",))

    def on_url(self, url: bytes):
        add_data(self.events, "url", url)

    def on_header(self, name: bytes, value: bytes):
        self.events.append(("header", name, value))

    def on_headers_complete(self):
        self.events.append(("headers_complete", self.parser.get_method(),
                            self.parser.get_http_version()))

    def on_body(self, body: bytes):
        add_data(self.events, "body", body)

    def on_chunk_header(self):
        self.events.append(("chunk_header",))

    def on_chunk_complete(self):
        self.events.append(("chunk_complete",))

    def on_message_complete(self):
        self.events.append(("message_complete",))


LENIENT_ALL = ("headers", "chunked_length", "keep_alive", "transfer_encoding", "version",
               "data_after_close", "optional_lf_after_cr", "optional_cr_before_lf",
               "optional_crlf_after_chunk")
LENIENT_EXPOSED = LENIENT_ALL + ("spaces_after_chunk_size",)


def leniencies(case_type: str) -> dict[str, bool]:
    if case_type == "request":
        return {}
    if case_type == "request-lenient-all":
        return {f"lenient_{flag}": True for flag in LENIENT_ALL}
    flag = case_type.removeprefix("request-lenient-").replace("-", "_")
    assert flag in LENIENT_EXPOSED, case_type
    return {f"lenient_{flag}": True}


def run_httptools(data: bytes, lenient: dict[str, bool], chunk: int | None) -> Outcome:
    rec = Recorder()
    parser = rec.parser = httptools.HttpRequestParser(rec)
    if lenient:
        parser.set_dangerous_leniencies(**lenient)
    pieces = [data] if chunk is None else [data[i:i + chunk] for i in range(0, len(data), chunk)]
    fed = 0
    try:
        for piece in pieces:
            parser.feed_data(piece)
            fed += len(piece)
    except HttpParserUpgrade as exc:
        return Outcome(rec.events, ("upgrade", fed + exc.args[0]))
    except HttpParserError as exc:
        return Outcome(rec.events, ("error", type(exc), str(exc)))
    return Outcome(rec.events, None)


# --- which cases run ---------------------------------------------------------------

def skip_reason(case: Case) -> str | None:
    ty = case.meta.get("type")
    if ty not in ("request", "request-finish") and not str(ty).startswith("request-lenient-"):
        return f"type {ty!r}: not a request-parser case"
    if ty == "request-finish":
        return "checks llhttp_finish() (EOF handling), which httptools does not expose"
    if ty == "request-lenient-header-value-relaxed":
        return ("needs llhttp's lenient_header_value_relaxed flag, which "
                "set_dangerous_leniencies does not offer")
    if case.meta.get("skipBody"):
        return ("needs on_headers_complete to return 1 (skip the body), which an "
                "httptools protocol cannot do")
    if case.meta.get("skip"):
        return "marked skip in llhttp itself"
    if "${" in case.raw_input:
        return "input evaluates inline JavaScript"
    if any(line.startswith("/") for line in case.raw_log.split("\n")):
        return "log matches lines by regular expression"
    return None


# Cases where httptools, by design, reports something other than llhttp's log.
# They are strict xfails, so that a change in either direction is noticed.
UPGRADE_SKIPS_BODY = (
    "httptools answers on_headers_complete with 1 when the request asks for an upgrade, "
    "so llhttp skips the body and stops at the end of the head (HttpParserUpgrade there, "
    "no on_body); llhttp's log parses the Content-Length body first")
KNOWN_DIFFERENCES = {
    "connection.md::Invalid whitespace token with `Connection` header field (lenient)":
        UPGRADE_SKIPS_BODY,
    "connection.md::Emitting part of body and pausing": UPGRADE_SKIPS_BODY,
    "connection.md::Upgrade POST request": UPGRADE_SKIPS_BODY,
    "content-length.md::Invalid whitespace token with `Content-Length` header field (lenient)":
        UPGRADE_SKIPS_BODY,
}


def all_cases() -> list:
    if FIXTURE_DIR is None:
        return [pytest.param(None, id="no-fixture-files", marks=pytest.mark.skip(
            reason="llhttp fixture files not found; see this module's docstring"))]
    params = []
    for name in sorted(FIXTURE_SHA256):
        path = FIXTURE_DIR / "request" / name
        if not path.is_file():
            continue        # reported by test_fixture_files_match_the_pinned_commit
        for case in read_cases(path):
            marks = []
            reason = skip_reason(case)
            if reason:
                marks.append(pytest.mark.skip(reason=reason))
            elif case.id in KNOWN_DIFFERENCES:
                marks.append(pytest.mark.xfail(reason=KNOWN_DIFFERENCES[case.id], strict=True))
            params.append(pytest.param(case, id=case.id, marks=marks))
    return params


# --- the tests -------------------------------------------------------------------

def test_bundled_llhttp_is_the_synced_one():
    installed = metadata.version("httptools")
    assert installed == httptools.__version__
    assert installed == SYNCED_HTTPTOOLS, (
        f"httptools {installed} is installed ("
        f"llhttp {BUNDLED_LLHTTP.get(installed, 'unknown')}). " + RESYNC)


@pytest.mark.skipif(FIXTURE_DIR is None, reason="llhttp fixture files not found")
def test_fixture_files_match_the_pinned_commit():
    assert (FIXTURE_DIR / "LICENSE").is_file(), "llhttp's LICENSE must go with its fixtures"
    found = {p.name for p in (FIXTURE_DIR / "request").glob("*.md")}
    assert found == set(FIXTURE_SHA256), f"files differ: {sorted(found ^ set(FIXTURE_SHA256))}"
    for name, digest in FIXTURE_SHA256.items():
        actual = hashlib.sha256((FIXTURE_DIR / "request" / name).read_bytes()).hexdigest()
        assert actual == digest, f"{name} is not the file of llhttp {FIXTURES_COMMIT}"


@pytest.mark.parametrize("case", all_cases())
def test_llhttp_request_fixture(case: Case):
    data = decode_input(case.raw_input)
    expected = expected_outcome(case.raw_log)
    lenient = leniencies(case.meta["type"])

    whole = run_httptools(data, lenient, None)
    assert whole.events == expected.events
    assert whole.error == expected.error
    if not case.meta.get("noScan"):
        bytewise = run_httptools(data, lenient, 1)
        assert bytewise.events == expected.events, "fed one byte at a time"
        assert bytewise.error == expected.error, "fed one byte at a time"


# --- the strictness fastgw relies on ---------------------------------------------

def parse(data: bytes) -> Outcome:
    return run_httptools(data, {}, None)


def assert_refused(data: bytes, reason: str, after_head: bool = False) -> None:
    """Parsing *data* fails with *reason*: inside the head, or right after on_headers_complete."""
    outcome = parse(data)
    assert outcome.error is not None and outcome.error[0] == "error", outcome
    assert outcome.error[2] == reason
    kinds = [event[0] for event in outcome.events]
    if after_head:
        assert kinds[-1] == "headers_complete", outcome
    else:
        assert "headers_complete" not in kinds, outcome


def test_well_formed_request_is_accepted():
    outcome = parse(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    assert outcome.error is None
    assert outcome.events == [("begin",), ("url", b"/a"), ("header", b"Host", b"x"),
                              ("header", b"Content-Length", b"2"),
                              ("headers_complete", b"POST", "1.1"), ("body", b"hi"),
                              ("message_complete",)]


def test_bare_lf_line_ending_in_headers_refused():
    assert_refused(b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n",
                   "Missing expected CR after header value")
    assert_refused(b"GET / HTTP/1.1\r\nHost: x\r\n\n", "Invalid header field char")


def test_bare_lf_after_request_line_refused():
    assert_refused(b"GET / HTTP/1.1\nHost: x\r\n\r\n", "Expected CRLF after version")


def test_transfer_encoding_with_content_length_refused():
    assert_refused(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n"
                   b"\r\n0\r\n\r\n", "Content-Length can't be present with Transfer-Encoding")
    assert_refused(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n"
                   b"\r\n0\r\n\r\n", "Transfer-Encoding can't be present with Content-Length")


def test_obs_fold_refused():
    for fold in (b" ", b"\t"):
        assert_refused(b"GET / HTTP/1.1\r\nX-Folded: a\r\n" + fold + b"b\r\n\r\n",
                       "Unexpected whitespace after header value")


def test_whitespace_before_colon_refused():
    for space in (b" ", b"\t"):
        assert_refused(b"GET / HTTP/1.1\r\nHost" + space + b": x\r\n\r\n",
                       "Invalid header token")


def test_duplicate_content_length_refused():
    assert_refused(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
                   "Duplicate Content-Length")
    assert_refused(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy",
                   "Duplicate Content-Length")


def test_transfer_coding_other_than_final_chunked_refused():
    assert_refused(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                   "Invalid `Transfer-Encoding` header value")
    # Found when the head is complete: on_headers_complete has been called already.
    assert_refused(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                   "Request has invalid `Transfer-Encoding`", after_head=True)


def test_empty_transfer_encoding_refused():
    # The one parser change from llhttp 9.4.2, whose fixtures run above, to 9.4.3.
    for value in (b" ", b""):
        assert_refused(b"POST / HTTP/1.1\r\nTransfer-Encoding:" + value + b"\r\n\r\n",
                       "Empty Transfer-Encoding")


def test_upgrade_request_body_is_not_parsed():
    # See UPGRADE_SKIPS_BODY: the head ends the message and the body bytes are left
    # to the upgraded protocol, although the request declared a Content-Length.
    data = (b"POST /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: ws\r\n"
            b"Content-Length: 4\r\n\r\nabcd")
    outcome = parse(data)
    assert outcome.error == ("upgrade", len(data) - 4)
    assert [e[0] for e in outcome.events][-2:] == ["headers_complete", "message_complete"]
