"""smuggler's Transfer-Encoding mutation gadgets, as CL.TE and TE.CL attacks on the protected host.

Ported from smuggler (https://github.com/defparam/smuggler, MIT licence, Copyright (c) 2020
Evan Custodio), commit 2be871e6151ce85167a277fab21c74c851d8b20b: the gadget sets of
configs/default.py, configs/doubles.py and configs/exhaustive.py (`GADGETS`, the same
loops and literals, so the same names), the request template of their `render_template`
and, from lib/Payload.py, that a payload goes on the wire as `str(payload).encode()`, i.e.
UTF-8 (a gadget character from 0x80 up is two bytes, as smuggler sends it).

smuggler detects desync by time-outs; here each gadget carries a whole smuggled request
for the protected route, without a token, and the recording upstream shows what went
through. For every gadget, two requests to protected.example without a token:

* CL.TE: Content-Length covers the body, "0" chunk then the smuggled request;
* TE.CL: one chunk holding the smuggled request, Content-Length covering only the
  chunk-size line;

each must be refused as framing (400/501, connection closed) or, read as unambiguous
requests, refused for the missing token (401), and nothing may reach the upstream. The
default set also runs with the consumer's token on the outer request, which must then
be refused as framing or forwarded whole with fastgw's own framing, nothing else
forwarded. The invariant holds for every run: in particular the gateway answers no more
requests than the reference parser reads in the bytes.
"""

from __future__ import annotations

import json

import pytest

from .conftest import PROTECTED

SMUGGLED = f"GET /admin HTTP/1.1\r\nHost: {PROTECTED}\r\n\r\n"  # no token: must never get through
USER_AGENT = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/78.0.3904.87 Safari/537.36")


def _default() -> dict[str, str]:
    m = {}
    m["nameprefix1"] = " Transfer-Encoding: chunked"
    m["tabprefix1"] = "Transfer-Encoding:\tchunked"
    m["tabprefix2"] = "Transfer-Encoding\t:\tchunked"
    m["space1"] = "Transfer-Encoding : chunked"
    for i in [0x1, 0x4, 0x8, 0x9, 0xa, 0xb, 0xc, 0xd, 0x1F, 0x20, 0x7f, 0xA0, 0xFF]:
        m["midspace-%02x" % i] = "Transfer-Encoding:%cchunked" % i
        m["postspace-%02x" % i] = "Transfer-Encoding%c: chunked" % i
        m["prespace-%02x" % i] = "%cTransfer-Encoding: chunked" % i
        m["endspace-%02x" % i] = "Transfer-Encoding: chunked%c" % i
        m["xprespace-%02x" % i] = "X: X%cTransfer-Encoding: chunked" % i
        m["endspacex-%02x" % i] = "Transfer-Encoding: chunked%cX: X" % i
        m["rxprespace-%02x" % i] = "X: X\r%cTransfer-Encoding: chunked" % i
        m["xnprespace-%02x" % i] = "X: X%c\nTransfer-Encoding: chunked" % i
        m["endspacerx-%02x" % i] = "Transfer-Encoding: chunked\r%cX: X" % i
        m["endspacexn-%02x" % i] = "Transfer-Encoding: chunked%c\nX: X" % i
    return m


def _doubles() -> dict[str, str]:
    m = {}
    for i in [*range(0x1, 0x21), *range(0x7F, 0x100)]:
        m["%02x-%02x-XX-XX" % (i, i)] = "%cTransfer-Encoding%c: chunked" % (i, i)
        m["%02x-XX-%02x-XX" % (i, i)] = "%cTransfer-Encoding:%cchunked" % (i, i)
        m["%02x-XX-XX-%02x" % (i, i)] = "%cTransfer-Encoding: chunked%c" % (i, i)
        m["XX-%02x-%02x-XX" % (i, i)] = "Transfer-Encoding%c:%cchunked" % (i, i)
        m["XX-%02x-XX-%02x" % (i, i)] = "Transfer-Encoding%c: chunked%c" % (i, i)
        m["XX-XX-%02x-%02x" % (i, i)] = "Transfer-Encoding:%cchunked%c" % (i, i)
    return m


def _exhaustive() -> dict[str, str]:
    m = {}
    m["nameprefix1"] = " Transfer-Encoding: chunked"
    m["tabprefix1"] = "Transfer-Encoding:\tchunked"
    m["tabprefix2"] = "Transfer-Encoding\t:\tchunked"
    m["spacejoin1"] = "Transfer Encoding: chunked"
    m["underjoin1"] = "Transfer_Encoding: chunked"
    m["smashed"] = "Transfer Encoding:chunked"
    m["space1"] = "Transfer-Encoding : chunked"
    m["valueprefix1"] = "Transfer-Encoding:  chunked"
    m["vertprefix1"] = "Transfer-Encoding:\u000Bchunked"
    m["commaCow"] = "Transfer-Encoding: chunked, cow"
    m["cowComma"] = "Transfer-Encoding: cow, chunked"
    m["contentEnc"] = "Content-Encoding: chunked"
    m["linewrapped1"] = "Transfer-Encoding:\n chunked"
    m["quoted"] = "Transfer-Encoding: \"chunked\""
    m["aposed"] = "Transfer-Encoding: 'chunked'"
    m["lazygrep"] = "Transfer-Encoding: chunk"
    m["sarcasm"] = "TrAnSFer-EnCODinG: cHuNkeD"
    m["yelling"] = "TRANSFER-ENCODING: CHUNKED"
    m["0dsuffix"] = "Transfer-Encoding: chunked\r"
    m["tabsuffix"] = "Transfer-Encoding: chunked\t"
    m["revdualchunk"] = "Transfer-Encoding: cow\r\nTransfer-Encoding: chunked"
    m["0dspam"] = "Transfer\r-Encoding: chunked"
    m["nested"] = "Transfer-Encoding: cow chunked bar"
    m["spaceFF"] = "Transfer-Encoding:\xFFchunked"
    m["accentCH"] = "Transfer-Encoding: ch\x96nked"
    m["accentTE"] = "Transf\x82r-Encoding: chunked"
    m["x-rout"] = "X:X\rTransfer-Encoding: chunked"
    m["x-nout"] = "X:X\nTransfer-Encoding: chunked"
    for i in [*range(0x1, 0x20), *range(0x7F, 0x100)]:
        m["midspace-%02x" % i] = "Transfer-Encoding:%cchunked" % i
        m["postspace-%02x" % i] = "Transfer-Encoding%c: chunked" % i
        m["prespace-%02x" % i] = "%cTransfer-Encoding: chunked" % i
        m["endspace-%02x" % i] = "Transfer-Encoding: chunked%c" % i
    return m


CONFIGS = {"default": _default(), "doubles": _doubles(), "exhaustive": _exhaustive()}
assert [len(m) for m in CONFIGS.values()] == [134, 966, 668]

# one case per distinct gadget; its names in every config that has it
GADGETS: dict[str, list[str]] = {}
for _config, _mutations in CONFIGS.items():
    for _name, _gadget in _mutations.items():
        GADGETS.setdefault(_gadget, []).append(f"{_config}:{_name}")


def render(gadget: str, style: str, n: int, token: str | None = None) -> bytes:
    """smuggler's render_template, with a CL.TE or TE.CL body carrying SMUGGLED."""
    if style == "CL.TE":
        body = "0\r\n\r\n" + SMUGGLED
        length = len(body)
    else:
        size = f"{len(SMUGGLED):x}"
        body = f"{size}\r\n{SMUGGLED}\r\n0\r\n\r\n"
        length = len(size) + 2
    head = (f"POST /?cb={n} HTTP/1.1\r\n{gadget}\r\nHost: {PROTECTED}\r\n"
            f"User-Agent: {USER_AGENT}\r\n"
            "Content-type: application/x-www-form-urlencoded; charset=UTF-8\r\n"
            f"Content-Length: {length}\r\n")
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    return (head + "\r\n" + body).encode("utf-8")


PARAMS = [pytest.param(gadget, style, i, id=f"{names[0]}-{style}")
          for i, (gadget, names) in enumerate(GADGETS.items()) for style in ("CL.TE", "TE.CL")]
DEFAULT_PARAMS = [pytest.param(gadget, style, i, id=f"default:{name}-{style}")
                  for i, (name, gadget) in enumerate(CONFIGS["default"].items())
                  for style in ("CL.TE", "TE.CL")]
MISSING_TOKEN = {"message": "Missing JWT token in request"}


def _refused(response, last: bool, ex) -> bool:
    """Refused as framing (400/501, then closed), or as a request without a token."""
    if response.status in (400, 501):
        return last and ex.closed
    return response.status == 401 and json.loads(response.body) == MISSING_TOKEN


@pytest.mark.parametrize("gadget,style,n", PARAMS)
def test_gadget_without_token_never_reaches_the_protected_upstream(edge, gadget, style, n):
    # When neither fastgw nor the reference parser reads the gadget as Transfer-Encoding,
    # the bytes after Content-Length are a second request on the wire, as the client sent
    # them: answered 401 too (the invariant has checked that the count is the reference's)
    ex = edge.check(edge.exchange(render(gadget, style, n)))
    assert not ex.records, "upstream saw:\n" + ex.describe()
    assert ex.responses, ex.describe()
    last = len(ex.responses) - 1
    assert all(_refused(r, i == last, ex) for i, r in enumerate(ex.responses)), ex.describe()


@pytest.mark.parametrize("gadget,style,n", DEFAULT_PARAMS)
def test_gadget_with_token_is_refused_or_forwarded_whole(edge, gadget, style, n):
    ex = edge.check(edge.exchange(render(gadget, style, n, edge.token)))
    assert ex.responses, ex.describe()
    first = ex.responses[0]
    if first.status in (400, 501):
        assert len(ex.responses) == 1 and ex.closed, ex.describe()
        return
    # forwarded whole, with fastgw's own framing (the invariant compared it with the
    # reference's reading); anything after it on the wire has no token
    assert 200 <= first.status < 300, ex.describe()
    assert [r.target for r in ex.records if r.complete] == [f"/?cb={n}"], ex.describe()
    last = len(ex.responses) - 1
    assert all(_refused(r, i == last, ex) for i, r in enumerate(ex.responses[1:], 1)), \
        ex.describe()
