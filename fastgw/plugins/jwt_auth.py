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
from operator import attrgetter, itemgetter

import orjson

from .. import jwt
from ..config.types import Bool, Errors, Field, Int, Nullable, Obj, Str, join
from ..responses import BAD_REQUEST, Response
from ..revocation import claims_of, revoked, unlisted
from ..spelling import any_case
from . import credentials
from .credentials import Identity, Places, Repeated, no_credential

# ---------------------------------------------------------------- the contract

NAME = "jwt-auth"
PRIORITY = 2510  # as in APISIX: before key-auth (2500)
UPSTREAM_HEADERS = credentials.UPSTREAM_HEADERS
CREDENTIAL_TYPE = "jwt-auth"
SECRET_FIELDS = ("secret", "private_key")

SCHEMA = Obj({
    "header": Field(Str(credentials.few_separators, pattern=credentials.HEADER_NAME),
                    default="authorization"),
    "query": Field(Str(), default="jwt"),
    "cookie": Field(Str(pattern=credentials.HEADER_NAME), default="jwt"),
    "hide_credentials": Field(Bool(), default=False),
    "key_claim_name": Field(Str(), default="key"),
    "anonymous_consumer": Field(Nullable(Str())),
})

cross_check = credentials.cross_check


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


CREDENTIAL_SCHEMA = Obj({
    "id": credentials.CREDENTIAL_ID,
    "type": Field(Str(choices=(CREDENTIAL_TYPE,)), default=CREDENTIAL_TYPE),
    "key": Field(Str(pattern=credentials.VISIBLE), required=True),
    "secret": Field(Nullable(Str())),
    "base64_secret": Field(Bool(), default=False),
    "algorithm": Field(Str(choices=jwt.ALGORITHM_NAMES), default="HS256"),
    "public_key": Field(Nullable(Str())),
    "private_key": Field(Nullable(Str())),
    "exp": Field(Int(min=1), default=86400),
    "lifetime_grace_period": Field(Int(min=0), default=0),
}, check=_credential_keys)


def default_id(username: str, cred: dict, nth: int) -> str:
    """A JWT credential's id defaults to its key (the key is no secret: tokens carry it)."""
    return cred["key"]


def generate_secret(cred: dict) -> str | None:
    """Fill in an HS* credential's missing secret (an unvalidated credential from the admin
    API); the field generated, or None."""
    if cred.get("algorithm", "HS256") in _HMAC_NAMES and cred.get("secret") in (None, ""):
        cred["secret"] = jwt.new_secret()
        return "secret"
    return None


_HMAC_NAMES = tuple(jwt.HMAC_ALGORITHMS)  # `in` a tuple: no TypeError for an unhashable value


def issue_token(cred: dict, claims: dict, ttl: int | None = None,
                expires: float | None = None, now: float | None = None) -> str:
    """A token signed for this credential, carrying its key; ValueError when fastgw cannot
    sign one (an asymmetric credential without its private key)."""
    payload = jwt.token_claims("key", cred["key"], cred["exp"] if ttl is None else ttl,
                               expires, claims, now=now)
    return jwt.sign_token(cred["algorithm"], signing_key(cred), payload)


def new_state(settings) -> "VerifiedTokenCache":
    """The verified-token cache, kept across reloads (each worker has its own)."""
    return VerifiedTokenCache(settings.jwt_cache_size)


# Prometheus counters (name without _total) -> (help, their value from the state)
COUNTERS = {f"fastgw_jwt_cache_{name}": (f"JWT cache {name}", attrgetter(name))
            for name in ("hits", "misses", "evictions")}


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

class Credential(credentials.Credential):
    """A consumer's JWT credential, compiled: its key prepared for verification."""

    __slots__ = ("key", "algorithm", "verifier", "grace")

    def __init__(self, username: str, conf: dict):
        super().__init__(username, conf)
        self.key, self.algorithm = conf["key"], conf["algorithm"]
        material = hmac_key(conf) if self.algorithm in jwt.HMAC_ALGORITHMS else conf["public_key"]
        self.verifier = jwt.VerifyingKey(self.algorithm, material)
        self.grace = conf["lifetime_grace_period"]

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
    return credentials.index_credentials(consumers, previous, CREDENTIAL_TYPE, _KEY, Credential)


_KEY = itemgetter("key")
retire = credentials.retire  # void the cached tokens of every credential not carried over


# ---------------------------------------------------------------- the cache

class VerifiedTokenCache(OrderedDict):
    """token bytes -> (credential, not_before, not_after, key claim name, claims for
    revocation.py), at most `maxsize` of them, the least recently used first.

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
REVOKED = _unauthorized("JWT token revoked", "revoked")  # SPEC section 9

# ---------------------------------------------------------------- the plugin

_NUMBER = (int, float)  # bool is not a number: type(True) is bool
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

    __slots__ = ("places", "key_claim", "anonymous", "credentials", "cache")

    def __init__(self, conf: dict, snapshot):
        self.places = Places(conf["header"], conf["query"], conf["cookie"],
                             conf["hide_credentials"])
        self.key_claim = conf["key_claim_name"]
        anonymous = conf["anonymous_consumer"]
        self.anonymous = None if anonymous is None else Identity(anonymous)
        self.credentials = snapshot.credentials[CREDENTIAL_TYPE]
        self.cache = snapshot.state[NAME]

    def access(self, ex) -> Response | None:
        """None lets the request through (ex.consumer set); else the answer: a 401, or
        a 400 (connection closed) when the credential is given twice."""
        try:
            token = self.places.in_header(ex)
            if token is None:
                token = self.places.elsewhere(ex)
                if token is None:
                    return no_credential(ex, self.anonymous, MISSING_TOKEN)
            # Whitespace around the token is not part of it (RFC 9110 5.5); llhttp
            # keeps what ends a value, and "Bearer" may be followed by several spaces.
            elif token[:7] in _BEARER:  # "Bearer " prefix optional, any case
                token = token[7:].strip(b" \t")
            else:
                token = token.rstrip(b" \t")
        except Repeated:
            ex.refuse(BAD_REQUEST)
            return BAD_REQUEST
        cache = self.cache
        entry = cache.get(token)
        if entry is None or entry[3] != self.key_claim or entry[0].revoked:
            cache.misses += 1
            return self._verify(ex, token)
        cache.move_to_end(token)  # now the most recently used
        cache.hits += 1
        cred, not_before, not_after, _, claims = entry
        if not_before <= time.time() < not_after:
            if not unlisted(claims) and revoked(claims):  # revocation.py: C, no frame
                return REVOKED
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
        claims = claims_of(payload)  # what a revocation looks at, kept for cache hits
        self.cache[token] = (cred, not_before, not_after, self.key_claim, claims)
        if not unlisted(claims) and revoked(claims):
            return REVOKED
        ex.consumer = cred
        return None


def build(conf: dict, snapshot) -> JwtAuth:
    return JwtAuth(conf, snapshot)
