"""The `jwt-auth` plugin: its schemas, its credentials, and its request-time check.

Request path, in SPEC section 4's order: find the token (header, then query,
then cookie; the first place it is present is the only one read), then either a
cache hit (the whole token is the key; the clock and the credential's liveness
are re-checked) or a full verification with the credential's prepared key.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from operator import itemgetter
from urllib.parse import unquote_to_bytes

import orjson

from .. import jwt
from ..config.types import Bool, Errors, Field, Int, Nullable, Obj, Str, join
from ..responses import BAD_REQUEST, Response
from ..spelling import any_case, header_names

# ---------------------------------------------------------------- schemas

def _few_separators(name: str) -> str | None:
    """The header is matched under every -/_ spelling (2 ** separators of them)."""
    if name.count("-") + name.count("_") > 8:
        return "must not hold more than 8 '-' or '_'"
    return None


SCHEMA = Obj({
    "header": Field(Str(_few_separators, pattern=r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"),
                    default="authorization"),
    "query": Field(Str(), default="jwt"),
    "cookie": Field(Str(pattern=r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"), default="jwt"),
    "hide_credentials": Field(Bool(), default=False),
    "key_claim_name": Field(Str(), default="key"),
    "anonymous_consumer": Field(Nullable(Str())),
})


def _credential_keys(cred: dict, path: str, errors: Errors) -> None:
    """Keys are parsed now, so a bad one is a configuration error, not a request-time 500."""
    alg = cred["algorithm"]
    if alg in jwt.HMAC_ALGORITHMS:
        if not cred["secret"]:
            errors.append((join(path, "secret"), f"is required for {alg}"))
            return
        try:
            jwt.VerifyingKey(alg, hmac_key(cred))
        except ValueError as exc:
            errors.append((join(path, "secret"), str(exc)))
        return
    if not cred["public_key"]:
        errors.append((join(path, "public_key"), f"is required for {alg}"))
        return
    try:
        jwt.VerifyingKey(alg, cred["public_key"])
    except ValueError as exc:
        errors.append((join(path, "public_key"), str(exc)))
    if cred["private_key"]:
        try:
            jwt.VerifyingKey(alg, cred["private_key"])
        except ValueError as exc:
            errors.append((join(path, "private_key"), str(exc)))


_VISIBLE = r"[\x21-\x7e]{1,256}"  # safe to send in a header, never a line break

CREDENTIAL_SCHEMA = Obj({
    "id": Field(Nullable(Str(pattern=_VISIBLE))),
    "type": Field(Str(choices=("jwt-auth",)), default="jwt-auth"),
    "key": Field(Str(pattern=_VISIBLE), required=True),
    "secret": Field(Nullable(Str())),
    "base64_secret": Field(Bool(), default=False),
    "algorithm": Field(Str(choices=jwt.ALGORITHM_NAMES), default="HS256"),
    "public_key": Field(Nullable(Str())),
    "private_key": Field(Nullable(Str())),
    "exp": Field(Int(min=1), default=86400),
    "lifetime_grace_period": Field(Int(min=0), default=0),
}, check=_credential_keys)


def cross_check(conf: dict, usernames: set[str]):
    """(field, message) for references to other objects that do not exist."""
    anonymous = conf["anonymous_consumer"]
    if anonymous is not None and anonymous not in usernames:
        yield "anonymous_consumer", f"no consumer named {anonymous!r}"


def hmac_key(cred: dict) -> bytes:
    try:
        return jwt.decode_secret(cred["secret"], cred["base64_secret"])
    except ValueError as exc:
        raise ValueError(str(exc)) from None


def signing_key(cred: dict) -> bytes | str:
    """What signs a token for this credential: the secret, or the private key."""
    if cred["algorithm"] in jwt.HMAC_ALGORITHMS:
        return hmac_key(cred)
    if not cred["private_key"]:
        raise ValueError(f"credential {cred['id']!r} uses {cred['algorithm']} and has no "
                         "private_key, so fastgw cannot sign tokens for it")
    return cred["private_key"]


# ---------------------------------------------------------------- credentials

class Credential:
    """A consumer's JWT credential, compiled. `revoked` is set when a new
    configuration no longer holds it unchanged, which voids its cached tokens."""

    __slots__ = ("username", "id", "key", "algorithm", "verifier", "grace", "head",
                 "revoked", "source")

    def __init__(self, username: str, conf: dict):
        self.username, self.id, self.key = username, conf["id"], conf["key"]
        self.algorithm = conf["algorithm"]
        material = hmac_key(conf) if self.algorithm in jwt.HMAC_ALGORITHMS else conf["public_key"]
        self.verifier = jwt.VerifyingKey(self.algorithm, material)
        self.grace = conf["lifetime_grace_period"]
        self.head = (b"x-consumer-username: " + username.encode() +
                              b"\r\nx-credential-identifier: " + self.id.encode() + b"\r\n")
        self.revoked = False
        self.source = (username, conf)

    def verifies(self, header: dict, signing_input: bytes, signature: bytes) -> bool:
        """The token's header names this credential's algorithm (never another, never
        "none") and no extension fastgw does not implement (RFC 7515 4.1.11 `crit`, RFC 7797
        unencoded payloads), and its signature verifies with this credential's key. Any key
        the token names or carries (`kid`, `jku`, `jwk`, `x5u`, `x5c`) plays no part."""
        return (header.get("alg") == self.algorithm and "crit" not in header
                and "b64" not in header and self.verifier.verify(signing_input, signature))


def index_credentials(consumers: list[dict], previous: dict[str, Credential] | None
                      ) -> dict[str, Credential]:
    """key -> Credential; an unchanged credential keeps its object (and its cached tokens)."""
    previous = previous or {}
    index = {}
    for consumer in consumers:
        for conf in consumer["credentials"]:
            old = previous.get(conf["key"])
            if old is not None and old.source == (consumer["username"], conf):
                index[conf["key"]] = old
            else:
                index[conf["key"]] = Credential(consumer["username"], conf)
    return index


def retire(old: dict[str, Credential], new: dict[str, Credential]) -> None:
    """Void the cached tokens of every credential the new index does not carry over."""
    for key, cred in old.items():
        if new.get(key) is not cred:
            cred.revoked = True


# ---------------------------------------------------------------- the cache

class VerifiedTokenCache(OrderedDict):
    """token bytes -> (credential, not_before, not_after, key claim name), at most
    `maxsize` of them, the least recently used first.

    Keyed by the whole token, so a payload changed under a signature seen before
    is a miss and gets verified in full. A hit is OrderedDict's `get`, then
    `move_to_end` by the caller (JwtAuth.access), both in C: cachetools' LRUCache ran
    37 bytecodes in four Python frames for the same hit."""

    def __init__(self, maxsize: int):
        super().__init__()
        self.maxsize = maxsize
        self.hits = self.misses = self.evictions = 0

    def __setitem__(self, token: bytes, entry: tuple) -> None:
        OrderedDict.__setitem__(self, token, entry)
        self.move_to_end(token)
        if len(self) > self.maxsize:
            self.popitem(last=False)
            self.evictions += 1


# ---------------------------------------------------------------- responses

def _unauthorized(message: str, reason: str) -> Response:
    challenge = 'Bearer realm="fastgw"'
    if reason != "missing_token":
        challenge += ', error="invalid_token"'
    return Response(401, orjson.dumps({"message": message}),
                    (("www-authenticate", challenge),), reason=reason)


MISSING_TOKEN = _unauthorized("Missing JWT token in request", "missing_token")
TOKEN_INVALID = _unauthorized("JWT token invalid", "invalid_token")
MISSING_KEY = _unauthorized("missing user key in JWT token", "missing_key")
INVALID_KEY = _unauthorized("Invalid user key in JWT token", "invalid_key")
VERIFY_FAILED = _unauthorized("failed to verify jwt", "verify_failed")

# ---------------------------------------------------------------- the plugin

_NUMBER = (int, float)  # bool is not a number: type(True) is bool
_NAME = itemgetter(0)


_BEARER = any_case(b"bearer ")  # 64 spellings; the prefix is case-insensitive


def _claim_time(payload: dict, name: str) -> float | None:
    """A numeric time claim, None when absent. Present, it must be a JSON number (RFC 7519
    4.1.4-6 NumericDate): null, a string, true/false, a list or an object fails
    verification, as in PyJWT and APISIX."""
    if name not in payload:
        return None
    value = payload[name]
    if type(value) not in _NUMBER:
        raise ValueError(name)
    return value


class JwtAuth:
    """One route's (or service's) jwt-auth configuration, ready for requests."""

    __slots__ = ("header", "is_header", "query", "cookie", "hide", "key_claim", "anonymous", "anonymous_head",
                 "credentials", "cache")

    def __init__(self, conf: dict, snapshot):
        # The header in every spelling a server behind may read as it (X_Token is X-Token)
        self.header = header_names((conf["header"].lower().encode("latin-1"),))
        self.is_header = self.header.__contains__
        self.query = conf["query"].encode()
        self.cookie = conf["cookie"].encode()
        self.hide = conf["hide_credentials"]
        self.key_claim = conf["key_claim_name"]
        anonymous = self.anonymous = conf["anonymous_consumer"]
        self.anonymous_head = (None if anonymous is None else _Anonymous(anonymous))
        self.credentials = snapshot.credentials
        self.cache = snapshot.token_cache

    def access(self, ex) -> Response | None:
        """None lets the request through (consumer headers set); else the answer: a 401, or
        a 400 (connection closed) when the credential is given twice."""
        header = self.header
        for name, token in ex.headers:
            if name in header and token:
                # A second copy would reach the upstream unverified, and which one it reads
                # is its choice: refused. Counted in C over the names, once, after a match.
                if sum(map(self.is_header, map(_NAME, ex.headers))) != 1:
                    ex.refuse(BAD_REQUEST)
                    return BAD_REQUEST
                if self.hide:
                    ex.drop_header(header)
                # Whitespace around the token is not part of it (RFC 9110 5.5); llhttp
                # keeps what ends a value, and "Bearer" may be followed by several spaces.
                if token[:7] in _BEARER:  # "Bearer " prefix optional, any case
                    token = token[7:].strip(b" \t")
                else:
                    token = token.rstrip(b" \t")
                break
        else:
            try:
                token = self._token_elsewhere(ex)
            except _Repeated:
                ex.refuse(BAD_REQUEST)
                return BAD_REQUEST
            if token is None:
                if self.anonymous_head is None:
                    return MISSING_TOKEN
                ex.consumer = self.anonymous_head
                return None
        cache = self.cache
        entry = cache.get(token)
        if entry is None or entry[3] != self.key_claim or entry[0].revoked:
            cache.misses += 1
            return self._verify(ex, token)
        cache.move_to_end(token)  # now the most recently used
        cache.hits += 1
        cred, not_before, not_after, _ = entry
        if not_before <= time.time() < not_after:
            ex.consumer = cred
            return None
        return VERIFY_FAILED

    def _verify(self, ex, token: bytes) -> Response | None:
        try:
            header, body, signing_input, signature = jwt.split_token(token)
            payload = orjson.loads(body)
        except ValueError:  # jwt.TokenInvalid, orjson.JSONDecodeError
            return TOKEN_INVALID
        if type(payload) is not dict:
            return TOKEN_INVALID
        key = payload.get(self.key_claim)
        if key is None:
            return MISSING_KEY
        cred = self.credentials.get(key) if type(key) is str else None
        if cred is None:
            return INVALID_KEY
        if not cred.verifies(header, signing_input, signature):
            return VERIFY_FAILED
        try:
            exp = _claim_time(payload, "exp")
            nbf = _claim_time(payload, "nbf")
            _claim_time(payload, "iat")  # not required, not compared; a number if present
        except ValueError:
            return VERIFY_FAILED
        not_after = math.inf if exp is None else exp + cred.grace
        not_before = -math.inf if nbf is None else nbf - cred.grace
        now = time.time()
        if not not_before <= now < not_after:
            return VERIFY_FAILED
        self.cache[token] = (cred, not_before, not_after, self.key_claim)
        ex.consumer = cred
        return None

    # ------------------------------------------------------------ finding the token

    def _token_elsewhere(self, ex) -> bytes | None:
        """The token from the query, else the cookie (the header had none); _Repeated when
        the place examined holds the credential's name more than once."""
        if sum(map(self.is_header, map(_NAME, ex.headers))) > 1:  # only empty, but twice
            raise _Repeated
        if b"?" in ex.target:
            token = self._from_query(ex)
            if token is not None:
                return token
        return self._from_cookies(ex)

    def _from_query(self, ex) -> bytes | None:
        """Names are compared percent-decoded, as the upstream's framework will read them
        (`%6Awt` is `jwt`), so that no spelling of a second copy slips past."""
        path, _, query = ex.target.partition(b"?")
        params = query.split(b"&")
        found = None
        for i, param in enumerate(params):
            name = param.partition(b"=")[0]
            if unquote_to_bytes(name.replace(b"+", b" ")) == self.query:
                if found is not None:
                    raise _Repeated
                found = i
        if found is None:
            return None
        value = params[found].partition(b"=")[2]
        if not value:
            return None
        if self.hide:
            del params[found]
            ex.target = path + b"?" + b"&".join(params) if params else path
        return unquote_to_bytes(value.replace(b"+", b" "))

    def _from_cookies(self, ex) -> bytes | None:
        """The credential cookie, looked for in every Cookie header (RFC 6265 5.2: name and
        value trimmed; a name is also compared percent-decoded, as some frameworks read it)."""
        want = self.cookie
        found = None
        for i, (name, value) in enumerate(ex.headers):
            if name == b"cookie":
                pairs = value.split(b";")
                for j, pair in enumerate(pairs):
                    cookie = pair.partition(b"=")[0].strip()
                    if cookie == want or b"%" in cookie and unquote_to_bytes(cookie) == want:
                        if found is not None:
                            raise _Repeated
                        found = (i, j, pairs)
        if found is None:
            return None
        i, j, pairs = found
        value = pairs[j].partition(b"=")[2].strip()
        if not value:
            return None
        if self.hide:
            del pairs[j]
            rest = b"; ".join(p.strip() for p in pairs if p.strip())
            if rest:
                ex.headers[i] = (b"cookie", rest)
            else:
                del ex.headers[i]
        return value.strip(b'"')


class _Anonymous:
    __slots__ = ("username", "head")

    def __init__(self, username: str):
        self.username = username
        self.head = b"x-consumer-username: " + username.encode() + b"\r\n"


class _Repeated(Exception):
    """The credential's header, query parameter or cookie is given more than once."""


def build(conf: dict, snapshot) -> JwtAuth:
    return JwtAuth(conf, snapshot)
