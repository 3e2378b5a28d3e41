"""The `jwt-auth` plugin: its schemas, its credentials, and its request-time check.

Request path, in SPEC section 4's order: find the token (header, then query,
then cookie; the first place it is present is the only one read), then either a
cache hit (the whole token is the key; the clock and the credential's liveness
are re-checked) or a full verification with the credential's prepared key.
"""

from __future__ import annotations

import logging
import math
import ssl
import time
from collections import OrderedDict
from operator import attrgetter, itemgetter

import orjson

from .. import jwt, keysets
from ..config.types import Bool, Errors, Field, Int, Nullable, Obj, Str, join
from ..jwks import url_problem
from ..responses import BAD_REQUEST, INTERNAL_ERROR, Response
from ..revocation import claims_of, revoked, unlisted
from ..spelling import any_case
from . import credentials, jwt_policy
from .credentials import Identity, Places, Repeated, no_credential

log = logging.getLogger("fastgw")

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
    **jwt_policy.FIELDS,  # audiences, required_claims, required_scopes, ...
}, check=jwt_policy.check)

cross_check = credentials.cross_check


_KEY_SET_SOURCES = ("jwks_uri", "oidc_issuer")


def key_set_url(cred: dict) -> str | None:
    """The URL a (validated) credential takes its keys from, or None: static keys."""
    return cred["jwks_uri"] or cred["oidc_issuer"]


def _credential_keys(cred: dict, path: str, errors: Errors) -> None:
    """Keys are parsed now, so a bad one is a configuration error, not a request-time 500."""
    sources = [field for field in _KEY_SET_SOURCES if cred[field] is not None]
    if cred["algorithm"] is None:  # the default: RS256 for a key set, else HS256
        cred["algorithm"] = "RS256" if sources else "HS256"
    if sources:
        _key_set_source(cred, sources, path, errors)
        return
    if cred["jwks_ca_file"] is not None:
        errors.append((join(path, "jwks_ca_file"), "is only for jwks_uri or oidc_issuer"))
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
        public = jwt.VerifyingKey(alg, cred["public_key"])
    except ValueError as exc:
        errors.append((join(path, "public_key"), str(exc)))
        public = None
    if public is not None and public.is_private:  # it would be shown by the admin API
        errors.append((join(path, "public_key"), "is a private key: the public one goes "
                                                  "here, a private one in private_key"))
    if cred["private_key"]:
        try:
            private = jwt.VerifyingKey(alg, cred["private_key"])
        except ValueError as exc:
            errors.append((join(path, "private_key"), str(exc)))
            return
        if not private.is_private:
            errors.append((join(path, "private_key"), "is a public key"))
        elif public is not None and private.public_bytes() != public.public_bytes():
            # every token it signed would be refused
            errors.append((join(path, "private_key"), "does not match public_key"))


def _key_set_source(cred: dict, sources: list[str], path: str, errors: Errors) -> None:
    """A credential whose keys come from a key set has no key of its own, and an algorithm
    a published key can serve."""
    if len(sources) > 1:
        errors.append((join(path, "oidc_issuer"), "cannot be given with jwks_uri (one source)"))
    for field in ("secret", "public_key", "private_key"):
        if cred[field] is not None:
            errors.append((join(path, field), f"must be absent: the keys come from {sources[0]}"))
    if cred["algorithm"] not in keysets.ALGORITHMS:
        errors.append((join(path, "algorithm"), f"{cred['algorithm']} cannot be used with a "
                       f"key set; one of {', '.join(keysets.ALGORITHMS)}"))
    if cred["jwks_ca_file"] is not None:
        try:  # read now: the master would fail on it at its first fetch
            ssl.create_default_context(cafile=cred["jwks_ca_file"])
        except (OSError, ssl.SSLError, ValueError) as exc:  # ValueError: a NUL in the path
            errors.append((join(path, "jwks_ca_file"),
                           f"cannot be read as CA certificates: {getattr(exc, 'strerror', None) or exc}"))


CREDENTIAL_SCHEMA = Obj({
    "id": credentials.CREDENTIAL_ID,
    "type": Field(Str(choices=(CREDENTIAL_TYPE,)), default=CREDENTIAL_TYPE),
    "key": Field(Str(pattern=credentials.VISIBLE), required=True),
    "secret": Field(Nullable(Str())),
    "base64_secret": Field(Bool(), default=False),
    # default (null): RS256 for a key-set credential, else HS256 (_credential_keys)
    "algorithm": Field(Nullable(Str(choices=jwt.ALGORITHM_NAMES))),
    "public_key": Field(Nullable(Str())),
    "private_key": Field(Nullable(Str())),
    "exp": Field(Int(min=1), default=86400),
    "lifetime_grace_period": Field(Int(min=0), default=0),
    "issuer": Field(Nullable(Str())),  # the token's `iss` must equal it
    # keys from an identity provider instead of secret/public_key (SPEC 8)
    "jwks_uri": Field(Nullable(Str(url_problem))),
    "oidc_issuer": Field(Nullable(Str(url_problem))),
    "jwks_refresh": Field(Int(min=1, max=86400), default=300),
    "jwks_max_stale": Field(Int(min=0), default=86400),
    "jwks_refetch_cooldown": Field(Int(min=1, max=86400), default=30),
    "jwks_ca_file": Field(Nullable(Str())),
}, check=_credential_keys)


def default_id(username: str, cred: dict, nth: int) -> str:
    """A JWT credential's id defaults to its key (the key is no secret: tokens carry it)."""
    return cred["key"]


def generate_secret(cred: dict) -> str | None:
    """Fill in an HS* credential's missing secret (an unvalidated credential from the admin
    API); the field generated, or None."""
    if any(cred.get(field) is not None for field in _KEY_SET_SOURCES):
        return None  # its keys come from a key set
    if cred.get("algorithm") in (*_HMAC_NAMES, None) and cred.get("secret") in (None, ""):
        cred["secret"] = jwt.new_secret()
        return "secret"
    return None


_HMAC_NAMES = tuple(jwt.HMAC_ALGORITHMS)  # `in` a tuple: no TypeError for an unhashable value


def token_leeway(cred: dict) -> int:
    """Seconds past its exp (and before its nbf) a token of `cred` is accepted."""
    return cred["lifetime_grace_period"]


def issue_token(cred: dict, claims: dict, ttl: int | None = None,
                expires: float | None = None, now: float | None = None) -> str:
    """A token signed for this credential, carrying its key; ValueError when fastgw cannot
    sign one (an asymmetric credential without its private key, or a key-set credential)."""
    url = key_set_url(cred)
    if url is not None:
        raise ValueError(f"credential {cred['id']!r} takes its keys from the key set {url}: "
                         "its tokens are signed by the identity provider, not by fastgw")
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

    __slots__ = ("key", "algorithm", "verifier", "grace", "issuer")

    def __init__(self, username: str, conf: dict):
        super().__init__(username, conf)
        self.key, self.algorithm = conf["key"], conf["algorithm"]
        material = hmac_key(conf) if self.algorithm in jwt.HMAC_ALGORITHMS else conf["public_key"]
        self.verifier = jwt.VerifyingKey(self.algorithm, material)
        self.grace = conf["lifetime_grace_period"]
        self.issuer = conf["issuer"]

    def identity_for(self, header: dict, signing_input: bytes, signature: bytes):
        """Who a token with a good signature is (this credential), or None."""
        return self if self.verifies(header, signing_input, signature) else None

    def verifies(self, header: dict, signing_input: bytes, signature: bytes) -> bool:
        """The token's header names this credential's algorithm (never another, never
        "none") and no extension fastgw does not implement (RFC 7515 4.1.11 `crit`, RFC 7797
        unencoded payloads), and its signature verifies with this credential's key. Any key
        the token names or carries (`kid`, `jku`, `jwk`, `x5u`, `x5c`) plays no part."""
        return (header.get("alg") == self.algorithm and "crit" not in header
                and "b64" not in header and self.verifier.verify(signing_input, signature))


class KeyedIdentity(Identity):
    """A key-set credential as one key of its set verified it: what its tokens are cached
    with, void (`revoked`) once that key leaves the set or the credential goes."""

    __slots__ = ("revoked", "__weakref__")


class KeySetCredential(credentials.Credential):
    """A consumer's JWT credential whose keys come from a key set (`jwks_uri`, or
    `oidc_issuer`): the token's `kid` picks the key (SPEC 8, "Which key")."""

    __slots__ = ("key", "algorithm", "grace", "issuer", "keys", "identities")

    def __init__(self, username: str, conf: dict):
        super().__init__(username, conf)
        self.key, self.algorithm = conf["key"], conf["algorithm"]
        self.grace, self.issuer = conf["lifetime_grace_period"], conf["issuer"]
        self.keys = keysets.key_set(key_set_url(conf))
        self.identities: dict[keysets.SetKey, KeyedIdentity] = {}

    def identity_for(self, header: dict, signing_input: bytes, signature: bytes):
        """Who the token is (a KeyedIdentity), None for a bad token, or UNKNOWN_KEY when
        its key is not in the set (a refetch may bring it). As for static keys, only the
        credential's algorithm, no `crit` or `b64`; `jwk`, `jku`, `x5u` and `x5c` in the
        header play no part, and nothing a token names is ever fetched."""
        if header.get("alg") != self.algorithm or "crit" in header or "b64" in header:
            return None
        view = self.keys.view(self.algorithm)
        kid = header.get("kid")
        if kid is None:  # only when the set has exactly one key for the algorithm
            candidates = () if view.single is None else (view.single,)
        elif type(kid) is str:
            candidates = view.by_kid.get(kid, ())
        else:
            return None
        if not candidates:
            return None if kid is None and self.keys.fetched else keysets.UNKNOWN_KEY
        for key in candidates:
            if key.verify(signing_input, signature):
                return self._identity(key)
        return None

    def _identity(self, key: keysets.SetKey) -> KeyedIdentity:
        who = self.identities.get(key)
        if who is None:
            who = self.identities[key] = KeyedIdentity(self.username, self.source[1]["id"])
            who.revoked = self.revoked or key.removed
            key.identities.add(who)
        return who

    def void(self) -> None:
        """The credential is gone: so is every identity it verified."""
        for who in self.identities.values():
            who.revoked = True


def _compile(username: str, conf: dict):
    return (Credential if key_set_url(conf) is None else KeySetCredential)(username, conf)


def index_credentials(consumers: list[dict], previous: dict[str, Credential] | None
                      ) -> dict[str, Credential]:
    """key -> Credential; an unchanged credential keeps its object (and its cached tokens)."""
    return credentials.index_credentials(consumers, previous, CREDENTIAL_TYPE, _KEY, _compile)


_KEY = itemgetter("key")


def retire(old: dict, new: dict) -> None:
    """Void the cached tokens of every credential not carried over."""
    credentials.retire(old, new)
    for cred in old.values():
        if cred.revoked and type(cred) is KeySetCredential:
            cred.void()


# ---------------------------------------------------------------- the cache

class VerifiedTokenCache(OrderedDict):
    """the token as it came -> (identity, not_before, not_after, context, claims for
    revocation.py), at most `maxsize` of them, the least recently used first.

    Keyed by the whole token as it came: the header's value as received (so a hit has no
    "Bearer " to strip; only a value that is the token alone or after "Bearer " is kept),
    or (token,) for a token from the query or a cookie (so a value is never taken for
    another place's). A payload changed under a signature seen before
    is a miss and gets verified in full. A hit is OrderedDict's `get`, then `move_to_end`
    by the caller (JwtAuth.access), both in C: cachetools' LRUCache ran 37 bytecodes in
    four Python frames for the same hit.

    The identity is what `ex.consumer` becomes (the credential, or an object that is void
    when it is: `revoked`); the context is the key claim's name, with the token policy the
    token passed (`JwtAuth.context`)."""

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
_now = time.time
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


def _header_token(value: bytes) -> bytes:
    """The token in a header's value: whitespace around it is not part of it (RFC 9110
    5.5; llhttp keeps what ends a value), and a "Bearer " prefix (any case, followed by
    any number of spaces) is optional."""
    if value[:7] in _BEARER:
        return value[7:].strip(b" \t")
    return value.rstrip(b" \t")


class JwtAuth:
    """One route's (or service's) jwt-auth configuration, ready for requests."""

    __slots__ = ("places", "plain", "key_claim", "anonymous", "credentials", "cache", "policy",
                 "context")

    def __init__(self, conf: dict, snapshot):
        self.places = Places(conf["header"], conf["query"], conf["cookie"],
                             conf["hide_credentials"])
        self.plain = self.places.plain  # the header's name in a plain request's fields
        self.key_claim = conf["key_claim_name"]
        anonymous = conf["anonymous_consumer"]
        self.anonymous = None if anonymous is None else Identity(anonymous)
        self.credentials = snapshot.credentials[CREDENTIAL_TYPE]
        self.cache = snapshot.state[NAME]
        # The token policy (None: none) and the context a cached token must have been
        # verified in: the key claim alone, or with the policy it passed.
        self.policy = jwt_policy.build(conf, self.key_claim)
        self.context = self.key_claim if self.policy is None else self.policy.context

    def access(self, ex) -> Response | None:
        """None lets the request through (ex.consumer set); else the answer: a 401, or
        a 400 (connection closed) when the credential is given twice."""
        # the cache key: the header's value as received (the token in it is found the
        # same way every time), or (token,) for one from the query or a cookie
        fields = ex.fields
        plain = self.plain
        key = None if fields is None or plain is None else fields.get(plain)
        if not key:  # not the usual request: the header in every spelling, then elsewhere
            places = self.places
            try:
                key = places.in_header(ex)
                if key is None:
                    token = places.elsewhere(ex)
                    if token is None:
                        return no_credential(ex, self.anonymous, MISSING_TOKEN)
                    key = (token,)
            except Repeated:
                ex.refuse(BAD_REQUEST)
                return BAD_REQUEST
        cache = self.cache
        entry = cache.get(key)
        if entry is not None:
            who, not_before, not_after, context, claims = entry
            if context == self.context and not who.revoked:
                cache.move_to_end(key)  # now the most recently used
                cache.hits += 1
                if not not_before <= _now() < not_after:
                    return VERIFY_FAILED
                if not unlisted(claims) and revoked(claims):  # revocation.py: C, no frame
                    return REVOKED
                ex.consumer = who
                return None
        cache.misses += 1
        return self._verify(ex, key[0] if type(key) is tuple else _header_token(key), key)

    def _verify(self, ex, token: bytes, cache_key, waited: bool = False) -> Response | None:
        """The full check of `token`; a good one is cached under `cache_key` (see access)."""
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
        try:  # the clock and the issuer first: no refetch for a token that fails them
            exp = _claim_time(payload, "exp")
            nbf = _claim_time(payload, "nbf")
            _claim_time(payload, "iat")  # not required, not compared; a number if present
        except ValueError:
            return VERIFY_FAILED
        # a jti or sub that is not a string (RFC 7519 4.1.2, 4.1.7; PyJWT refuses it too):
        # no revocation, which names them as strings, could reach the token
        if type(payload.get("jti", "")) is not str or type(payload.get("sub", "")) is not str:
            return VERIFY_FAILED
        not_after = math.inf if exp is None else exp + cred.grace
        not_before = -math.inf if nbf is None else nbf - cred.grace
        now = time.time()
        if not not_before <= now < not_after:
            return VERIFY_FAILED
        if cred.issuer is not None and payload.get("iss") != cred.issuer:
            return VERIFY_FAILED
        who = cred.identity_for(header, signing_input, signature)
        if who is None:
            return VERIFY_FAILED
        if who is keysets.UNKNOWN_KEY:  # a key-set credential without the token's key
            return (VERIFY_FAILED if waited
                    else self._await_keys(ex, token, cache_key, cred, header))
        if who.revoked:  # its credential, or its key, went while the request waited for keys
            return INVALID_KEY if cred.revoked else VERIFY_FAILED
        policy = self.policy
        if policy is not None:  # SPEC 8: after the signature and the clock
            if policy.too_long(payload, now):
                return VERIFY_FAILED
            answer = policy.refusal(payload, now)
            if answer is not None:
                return answer
            who = policy.identity(who, payload)
        claims = claims_of(payload, cred.grace)  # what a revocation looks at, for cache hits
        # a header's value is cached only as the token alone or after "Bearer " (any case):
        # padded with whitespace, one token could fill the cache with entries of any size
        if type(cache_key) is tuple or len(cache_key) <= len(token) + 7:
            self.cache[cache_key] = (who, not_before, not_after, self.context, claims)
        if not unlisted(claims) and revoked(claims):
            return REVOKED
        ex.consumer = who
        return None

    def _await_keys(self, ex, token: bytes, cache_key, cred, header: dict):
        """PENDING while the key set is refetched (the request is verified again once the
        master answered), or the 401 at once when no refetch may be asked for now."""
        from . import PENDING  # defined after this module is imported

        def again() -> None:
            try:
                answer = self._verify(ex, token, cache_key, waited=True)
            except Exception:
                log.exception("jwt-auth failed verifying a request after a key-set refetch")
                answer = INTERNAL_ERROR
            ex.resume(answer)
        kid = header.get("kid")
        if cred.keys.await_refetch(kid if type(kid) is str else None, again):
            return PENDING
        return VERIFY_FAILED


class JwtAuthSettingHeaders(JwtAuth):
    """With `claims_to_headers`: the client's copies of those headers are dropped from every
    request (whatever its token, or none), then set from the verified token's claims (they
    are part of its identity's head, `jwt_policy.ClaimsIdentity`)."""

    __slots__ = ()

    def access(self, ex) -> Response | None:
        ex.drop_header(self.policy.header_names)
        return JwtAuth.access(self, ex)


def build(conf: dict, snapshot) -> JwtAuth:
    """Decided here, once: a configuration without claims_to_headers runs none of it."""
    if conf["claims_to_headers"]:
        return JwtAuthSettingHeaders(conf, snapshot)
    return JwtAuth(conf, snapshot)
