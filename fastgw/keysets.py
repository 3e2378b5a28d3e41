"""Key sets from identity providers as a worker holds them (SPEC section 8, "Which key").

A worker never fetches: the master does (`jwks.py`) and sends each URL's keys down the
same pipe as configurations, `{"jwks": url, "keys": [JWK, ...] | null, "generation": N,
"cooldown": S}` (`received`). Keys are parsed here, with PyJWT's `PyJWK`, once per key and
algorithm (`SetKey`), and kept for as long as the set still holds that exact key: a refresh
that changes nothing costs nothing, and the verified tokens of a key stay cached.

A key the set no longer holds (a newer set without it, or a set the master dropped after
`jwks_max_stale`) is `remove`d: every identity it verified is revoked at once, and so are
the verified-token cache entries that hold them.

A token whose key is not in the set (an unknown `kid`, or a set never fetched) may wait
for a refetch (`await_refetch`): the worker asks the master (`ask`, set by the worker
process) at most once per `jwks_refetch_cooldown`, and the requests that come meanwhile
wait for that answer; after it, a kid still unknown is remembered (a bounded memory) and
refused at once until the cooldown has passed, so a flood of random kids costs one fetch.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections import OrderedDict
from typing import Callable

import orjson
from jwt import PyJWK

from .jwt import WeakKey, check_key_size

log = logging.getLogger("fastgw")

# What a key must be for each algorithm: (kty, the curves that serve it, None: any).
_FITS = {
    **{alg: ("RSA", None) for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    "ES256": ("EC", ("P-256",)), "ES384": ("EC", ("P-384",)), "ES512": ("EC", ("P-521",)),
    "EdDSA": ("OKP", ("Ed25519", "Ed448")),
}
ALGORITHMS = tuple(_FITS)  # those a key-set credential may use (never HS*, never none)
# Private members a careless provider might publish: never used, a set verifies only.
_PRIVATE = frozenset(("d", "p", "q", "dp", "dq", "qi", "oth", "k"))

WAIT_LIMIT = 6.0  # seconds a request waits for the master's answer (its fetch: 5 s)
MAX_WAITERS = 10_000  # requests waiting for one URL's refetch; more are refused
MAX_UNKNOWN = 4096  # kids remembered as unknown, per URL
MAX_KID = 256  # a longer kid is no provider's: unknown, and not remembered


class _Unknown:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNKNOWN_KEY"


UNKNOWN_KEY = _Unknown()  # the token's key is not in the set (yet): see await_refetch


def usable(jwk, algorithm: str) -> bool:
    """Whether a JWK may verify tokens of `algorithm`: a signing key (`use` "sig" or
    absent, `key_ops` with "verify" or absent), of the algorithm (`alg` absent or equal),
    of a type and curve that serve it."""
    if type(jwk) is not dict:
        return False
    use, alg, ops = jwk.get("use"), jwk.get("alg"), jwk.get("key_ops")
    if use is not None and use != "sig" or alg is not None and alg != algorithm:
        return False
    if ops is not None and (type(ops) is not list or "verify" not in ops):
        return False
    kty, curves = _FITS[algorithm]
    return jwk.get("kty") == kty and (curves is None or jwk.get("crv") in curves)


class SetKey:
    """One key of a set, prepared for one algorithm. `identities` are those it verified
    (revoked when it is removed)."""

    __slots__ = ("kid", "_alg", "_key", "identities", "removed")

    def __init__(self, jwk: dict, algorithm: str):
        public = {name: value for name, value in jwk.items() if name not in _PRIVATE}
        parsed = PyJWK(public, algorithm)  # PyJWKError, InvalidKeyError (a PyJWTError), ...
        check_key_size(parsed.key)  # WeakKey
        self._alg, self._key = parsed.Algorithm, parsed.key
        kid = jwk.get("kid")
        self.kid = kid if type(kid) is str else None
        self.identities: weakref.WeakSet = weakref.WeakSet()
        self.removed = False

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        return self._alg.verify(signing_input, self._key, signature)

    def remove(self) -> None:
        self.removed = True
        for identity in list(self.identities):
            identity.revoked = True


class View:
    """A set's keys usable for one algorithm: by kid, and the one key a token without a
    kid may use (only when the set has exactly one usable key)."""

    __slots__ = ("by_kid", "single")

    def __init__(self, keys: list[SetKey]):
        self.by_kid: dict[str, list[SetKey]] = {}
        for key in keys:
            if key.kid is not None:
                self.by_kid.setdefault(key.kid, []).append(key)
        self.single = keys[0] if len(keys) == 1 else None


def _canonical(jwk: dict) -> bytes:
    return orjson.dumps(jwk, option=orjson.OPT_SORT_KEYS)


def ask(uri: str) -> None:
    """Ask the master to refetch `uri` (replaced by the worker process)."""


class KeySet:
    """One key-set URL as this worker knows it."""

    def __init__(self, uri: str):
        self.uri = uri
        self.generation = 0  # the master's count of the set's changes; 0: nothing received
        self.fetched = False  # the master has keys for it (it may hold none)
        self.jwks: dict[bytes, dict] = {}  # canonical JSON -> JWK
        self._prepared: dict[tuple[bytes, str], SetKey | None] = {}  # None: unusable
        self._views: dict[str, View] = {}
        self.cooldown = 30.0
        self.asked_at = -math.inf  # when this worker last asked for a refetch (monotonic)
        self.asking = False  # ... and has no answer yet
        self.waiters: list[tuple[str, Callable[[], None]]] = []
        self.unknown: OrderedDict[str, float] = OrderedDict()  # kid -> remembered until
        self._timer = None

    # ------------------------------------------------------------ request time

    def view(self, algorithm: str) -> View:
        view = self._views.get(algorithm)
        if view is None:
            view = self._views[algorithm] = View(self._keys_for(algorithm))
        return view

    def _keys_for(self, algorithm: str) -> list[SetKey]:
        keys = []
        for canonical, jwk in self.jwks.items():
            if not usable(jwk, algorithm):
                continue
            slot = (canonical, algorithm)
            if slot not in self._prepared:
                try:
                    self._prepared[slot] = SetKey(jwk, algorithm)
                except Exception as exc:  # PyJWKError, InvalidKeyError, a bad number...
                    # a key this set cannot give: left out, said once per key and set
                    log.warning("key set %s: a %s key cannot be used for %s: %s", self.uri,
                                jwk.get("kty"), algorithm,
                                exc if isinstance(exc, WeakKey) else type(exc).__name__)
                    self._prepared[slot] = None
            key = self._prepared[slot]
            if key is not None:
                keys.append(key)
        return keys

    def await_refetch(self, kid: str | None, callback: Callable[[], None]) -> bool:
        """The token's key is not in the set: True if `callback` will be called once the
        master answered (a refetch this worker asked for, now or before), False when the
        token is to be refused at once (asked within the cooldown, or a kid recently
        found unknown)."""
        now = time.monotonic()
        kid = kid or ""
        if len(kid) > MAX_KID:
            return False
        until = self.unknown.get(kid)
        if until is not None:
            if now < until:
                return False
            del self.unknown[kid]
        if not self.asking:
            if now - self.asked_at < self.cooldown:
                return False
            self.asked_at, self.asking = now, True
            ask(self.uri)
            self._timer = asyncio.get_running_loop().call_later(WAIT_LIMIT, self._settle)
        if len(self.waiters) >= MAX_WAITERS:
            return False
        self.waiters.append((kid, callback))
        return True

    # ------------------------------------------------------------ from the master

    def update(self, keys: list | None, generation: int, cooldown: float) -> None:
        self.cooldown = cooldown
        if generation != self.generation:
            new = {}
            for jwk in keys or ():
                if type(jwk) is dict:
                    new[_canonical(jwk)] = jwk
            for slot, key in list(self._prepared.items()):
                if slot[0] not in new:
                    del self._prepared[slot]
                    if key is not None:
                        key.remove()
            self.jwks, self._views = new, {}
            self.generation, self.fetched = generation, keys is not None
        self._settle()

    def _settle(self) -> None:
        """The master answered (or did not, in time): each waiting request is checked
        again against the keys there are now; a kid still missing is remembered."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.asking = False
        waiters, self.waiters = self.waiters, []
        until = time.monotonic() + self.cooldown
        for kid, _ in waiters:
            self.unknown[kid] = until  # a kid found in the set now is looked up first
            self.unknown.move_to_end(kid)
        while len(self.unknown) > MAX_UNKNOWN:
            self.unknown.popitem(last=False)
        for _, callback in waiters:
            try:
                callback()
            except Exception:  # one request's failure must not stop the others
                log.exception("key set %s: error resuming a request", self.uri)


_SETS: dict[str, KeySet] = {}


def key_set(uri: str) -> KeySet:
    """The one KeySet of `uri` in this process (credentials of every configuration share it)."""
    found = _SETS.get(uri)
    if found is None:
        found = _SETS[uri] = KeySet(uri)
    return found


def received(message: dict) -> None:
    """A master's message about a URL's keys (`{"jwks": url, ...}`)."""
    key_set(message["jwks"]).update(message.get("keys"), message["generation"],
                                    message.get("cooldown", 30.0))
