"""Token policy of the `jwt-auth` plugin (SPEC section 8): what a verified token must also
hold on a route (`audiences`, `required_claims`, `required_scopes`, `max_lifetime`), and the
claims it hands the upstream as headers (`claims_to_headers`).

Everything is decided when the configuration is compiled: a route without policy has no
`TokenPolicy` at all (its requests run none of this), and a route with one checks a token
once, when it is verified. The verified-token cache remembers under which policy a token
passed (`TokenPolicy.context`): a hit under the same policy needs no second look, since
nothing a policy reads changes while the token is cached (`exp` − now only shrinks).
"""

from __future__ import annotations

import re

import orjson

from ..config.types import Errors, Field, Int, List, Map, Nullable, Str, join
from ..responses import Response
from ..spelling import header_names
from .credentials import HEADER_NAME, Identity, few_separators

# Headers fastgw writes itself or that frame the request: never set from a claim.
_RESERVED = frozenset((
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te",
    "trailer", "upgrade", "expect", "proxy-connection", "proxy-authenticate",
    "proxy-authorization", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
    "x-real-ip", "x-consumer-username", "x-credential-identifier"))


def _claim_header(name: str) -> str | None:
    lowered = name.lower().replace("_", "-")
    if lowered in _RESERVED:
        return f"{name!r} is a header fastgw sets or frames the request with"
    return few_separators(name)


CLAIM_HEADER = Str(_claim_header, pattern=HEADER_NAME)

FIELDS = {
    "audiences": Field(Nullable(List(Str(), min_len=1, unique=True))),
    "required_claims": Field(List(Str(), unique=True), default=[]),
    "required_scopes": Field(List(Str(pattern=r"[\x21-\x7e]+"), unique=True), default=[]),
    "max_lifetime": Field(Nullable(Int(min=1))),
    "claims_to_headers": Field(Map(lambda claim: CLAIM_HEADER), default={}),
}


def check(conf: dict, path: str, errors: Errors) -> None:
    """Two claims may not set one header (under any -/_ spelling or case)."""
    seen: dict[str, str] = {}
    for claim, header in conf["claims_to_headers"].items():
        name = header.lower().replace("_", "-")
        if name in seen:
            errors.append((join(join(path, "claims_to_headers"), claim),
                           f"header {header!r} is also set from claim {seen[name]!r}"))
        seen[name] = claim


def _refusal(status: int, message: str, challenge: str, reason: str) -> Response:
    return Response(status, orjson.dumps({"message": message}),
                    (("www-authenticate", challenge),), reason=reason)


_INVALID = 'Bearer realm="fastgw", error="invalid_token"'
AUDIENCE_REFUSED = _refusal(403, "JWT audience not allowed", _INVALID, "audience")
MISSING_CLAIMS = _refusal(401, "JWT missing required claims", _INVALID, "missing_claims")
SCOPE_INSUFFICIENT = _refusal(403, "JWT scope insufficient",
                              'Bearer realm="fastgw", error="insufficient_scope"', "scope")

_NUMBER = (int, float)


def _scopes(payload: dict) -> set:
    """`scope` (RFC 8693 4.2: space-separated) and `scp` (a list, or a space-separated
    string as Entra ID writes it), together."""
    scope, scp = payload.get("scope"), payload.get("scp")
    found = set(scope.split(" ")) if type(scope) is str else set()
    if type(scp) is str:
        found.update(scp.split(" "))
    elif type(scp) is list:
        found.update(item for item in scp if type(item) is str)
    return found


# What a field value may not hold (RFC 9110 5.5): control characters but HTAB, and DEL.
# CR, LF and NUL would break the request head; the others upstreams refuse (a 502).
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]").search


def _header_value(value) -> bytes | None:
    """A claim as a header value: a string as it is, anything else compact JSON; None
    when a field value cannot hold it (a control character)."""
    data = value.encode() if type(value) is str else orjson.dumps(value)
    return None if _CONTROL(data) else data


class ClaimsIdentity(Identity):
    """A verified consumer whose upstream head also carries headers taken from its token's
    claims. It is void when the identity it extends is (`revoked`)."""

    __slots__ = ("base",)

    def __init__(self, base, lines: bytes):
        self.username, self.head, self.base = base.username, base.head + lines, base

    @property
    def revoked(self) -> bool:
        return self.base.revoked


class TokenPolicy:
    """One plugin configuration's policy, compiled."""

    __slots__ = ("audiences", "claims", "scopes", "max_lifetime", "headers", "header_names",
                 "context")

    def __init__(self, conf: dict, key_claim: str):
        self.audiences = None if conf["audiences"] is None else frozenset(conf["audiences"])
        self.claims = tuple(conf["required_claims"])
        self.scopes = frozenset(conf["required_scopes"])
        self.max_lifetime = conf["max_lifetime"]
        self.headers = tuple((claim, header.lower().encode())
                             for claim, header in conf["claims_to_headers"].items())
        # the client's copies are removed under every -/_ spelling, as the identity headers are
        self.header_names = header_names(name for _, name in self.headers)
        # Equal policies (on any route) share a context string, so their tokens share cache
        # entries; a token verified under another context is verified again.
        self.context = key_claim + "\0" + orjson.dumps(
            {name: conf[name] for name in FIELDS}, option=orjson.OPT_SORT_KEYS).decode()

    def refusal(self, payload: dict, now: float) -> Response | None:
        """Why a verified token does not pass (its answer), or None. `max_lifetime` is
        answered by the caller, with the other verification failures (`too_long`)."""
        audiences = self.audiences
        if audiences is not None:
            aud = payload.get("aud")
            if type(aud) is str:
                aud = (aud,)
            elif type(aud) is not list:
                aud = ()
            if not any(type(a) is str and a in audiences for a in aud):
                return AUDIENCE_REFUSED
        for claim in self.claims:
            if payload.get(claim) is None:
                return MISSING_CLAIMS
        if self.scopes and not self.scopes <= _scopes(payload):
            return SCOPE_INSUFFICIENT
        return None

    def too_long(self, payload: dict, now: float) -> bool:
        """The token has no `exp`, or lives longer than `max_lifetime` from now."""
        limit = self.max_lifetime
        if limit is None:
            return False
        exp = payload.get("exp")
        return type(exp) not in _NUMBER or exp - now > limit

    def identity(self, who, payload: dict):
        """`who`, carrying the headers set from the token's claims when there are any."""
        lines = []
        for claim, name in self.headers:
            if claim in payload:
                value = _header_value(payload[claim])
                if value is not None:
                    lines.append(name + b": " + value + b"\r\n")
        return ClaimsIdentity(who, b"".join(lines)) if lines else who


def build(conf: dict, key_claim: str) -> TokenPolicy | None:
    """The policy of a plugin configuration; None when it sets none."""
    if (conf["audiences"] is None and not conf["required_claims"] and not conf["required_scopes"]
            and conf["max_lifetime"] is None and not conf["claims_to_headers"]):
        return None
    return TokenPolicy(conf, key_claim)
