"""JWT keys, signing and fast verification on PyJWT's algorithm objects.

`jwt.decode` re-parses the key, re-validates options and walks a dozen branches
on every call (about 30 us per HS256 token). A gateway knows each credential's
algorithm and key in advance, so it prepares them once (`VerifyingKey`) and does
per token only what the token itself requires: split, decode, one signature check.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from typing import Any

import jwt as pyjwt
import orjson
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import get_default_algorithms
from jwt.exceptions import InvalidKeyError

_ALGORITHMS = {name: alg for name, alg in get_default_algorithms().items() if name != "none"}

# The algorithms a credential may use; "none" is never one of them.
ALGORITHM_NAMES = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384",
                   "PS512", "ES256", "ES384", "ES512", "EdDSA")
HMAC_ALGORITHMS = frozenset(("HS256", "HS384", "HS512"))
# The latest time a token or a revocation may name: 9999-12-31T23:59:59Z, the last one
# that can be written as a date (ISO 8601, Python's datetime, the console's Date).
LATEST = 253_402_300_799

_URL_TO_STD = bytes.maketrans(b"-_", b"+/")
_PADDING = (b"", b"", b"==", b"=")  # by len % 4; a remainder of 1 is never valid

# A token segment in any other spelling than the canonical one is refused, so that one
# signature stands for exactly one token text (the verified-token cache is keyed by the
# text): "+", "/" and "=" become "*", which strict a2b_base64 refuses like any stranger.
_SEGMENT_TO_STD = bytes.maketrans(b"-_+/=", b"+/***")
# The final character of a segment of len % 4 == 2 (or 3) carries 4 (or 2) unused low bits,
# which RFC 4648 3.5 and RFC 7515 2 ("all trailing '=' characters omitted") leave zero:
# the characters whose value is a multiple of 16 (or 4).
_CANONICAL_LAST = (None, None, frozenset(b"AQgw"), frozenset(b"AEIMQUYcgkosw048"))


class TokenInvalid(ValueError):
    """The token is not three canonical base64url segments, or its header is not JSON."""


def b64url_decode(segment: bytes) -> bytes:
    """Canonical base64url only: the URL-safe alphabet, no padding, unused bits zero.

    Any other spelling (a character outside the alphabet, "=", the "+/" alphabet, or
    non-zero trailing bits, which decode to the same bytes) is an error, not tolerated."""
    rem = len(segment) % 4
    if rem:
        if rem == 1:
            raise TokenInvalid("bad base64 length")
        if segment[-1] not in _CANONICAL_LAST[rem]:
            raise TokenInvalid("not canonical base64url")
    try:
        return binascii.a2b_base64(segment.translate(_SEGMENT_TO_STD) + _PADDING[rem],
                                   strict_mode=True)
    except binascii.Error:
        raise TokenInvalid("bad base64") from None


def decode_secret(secret: str, base64_encoded: bool) -> bytes:
    """The HMAC key a credential's `secret` stands for."""
    if not base64_encoded:
        return secret.encode()
    data = secret.strip().encode().translate(_URL_TO_STD).rstrip(b"=")
    try:
        return binascii.a2b_base64(data + _PADDING[len(data) % 4], strict_mode=True)
    except binascii.Error:
        raise ValueError("is not valid base64 (base64_secret is true)") from None


# An HMAC secret PyJWT's checks cannot refuse: printable ASCII without spaces (so no PEM
# block, SSH key or UTF-16 text), not starting like JSON that could hold a JWK ("{", "[")
# or like DER ("0" is 0x30, a SEQUENCE), no PEM dashes.
_PLAIN_SECRET = re.compile(rb"(?![0\[{])[\x21-\x7e]+")


MIN_RSA_BITS = 2048  # RFC 7518 3.3 and 3.5: "a key of size 2048 bits or larger MUST be used"


class WeakKey(ValueError):
    """An RSA key too small to trust: a 512-bit one is factored in hours."""


def check_key_size(key) -> None:
    """WeakKey for an RSA key (public or private) under MIN_RSA_BITS; other keys pass."""
    size = getattr(key, "key_size", None)
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)) and size < MIN_RSA_BITS:
        raise WeakKey(f"an RSA key of {size} bits; at least {MIN_RSA_BITS} are required")


class VerifyingKey:
    """One credential's algorithm and key, prepared for repeated verification."""

    __slots__ = ("algorithm", "_alg", "_key")

    def __init__(self, algorithm: str, key_material: bytes | str):
        if algorithm not in _ALGORITHMS:
            raise ValueError(f"unknown algorithm {algorithm!r}")
        self.algorithm = algorithm
        self._alg = _ALGORITHMS[algorithm]
        if algorithm in HMAC_ALGORITHMS:
            key = key_material.encode() if isinstance(key_material, str) else key_material
            if _PLAIN_SECRET.fullmatch(key) and b"-----" not in key:
                # PyJWT would return it unchanged after ~40 us of refusing asymmetric keys,
                # certificates and JWKs it cannot be (100,000 credentials: 4 s of start-up)
                self._key = key
                return
        try:
            self._key = self._alg.prepare_key(key_material)
            check_key_size(self._key)
        except (InvalidKeyError, ValueError, TypeError) as exc:
            got = _KEY_TYPE.search(str(exc))  # PyJWT's message names a generator object
            reason = f"it is an {got[1]}" if got else str(exc)
            raise ValueError(f"cannot be used with {algorithm}: {reason}") from None

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        return self._alg.verify(signing_input, self._key, signature)

    def public_bytes(self) -> bytes | None:
        """The public key, DER: the same for a private key and its public key; None for an
        HMAC secret."""
        key = getattr(self._key, "public_key", None)
        key = self._key if key is None else key()  # a private key, else a public one
        if not hasattr(key, "public_bytes"):
            return None
        return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)

    @property
    def is_private(self) -> bool:
        return hasattr(self._key, "public_key")  # public keys have no public_key()


_KEY_TYPE = re.compile(r"got: (\w+)")


_HEADERS: dict[bytes, dict] = {}  # encoded header -> parsed; a few distinct ones in practice
_HEADERS_MAX = 256


def _header(segment: bytes) -> dict:
    header = _HEADERS.get(segment)
    if header is None:
        try:
            header = orjson.loads(b64url_decode(segment))
        except orjson.JSONDecodeError:
            raise TokenInvalid("header is not JSON") from None
        if type(header) is not dict:
            raise TokenInvalid("header is not an object")
        if len(_HEADERS) >= _HEADERS_MAX:
            _HEADERS.clear()
        _HEADERS[segment] = header
    return header


def split_token(token: bytes) -> tuple[dict, bytes, bytes, bytes]:
    """(header, payload bytes, signing input, signature) of a compact JWS, or TokenInvalid.

    The payload is returned decoded but not parsed: what it must hold is the JWT layer's
    business (a JWS payload may be any bytes). The header is shared between calls (it is
    memoised by its encoding): read it only."""
    parts = token.split(b".")
    if len(parts) != 3:
        raise TokenInvalid("not three segments")
    head, body, sig = parts
    return (_header(head), b64url_decode(body), token[: len(head) + 1 + len(body)],
            b64url_decode(sig))


def new_secret() -> str:
    """32 random bytes, URL-safe base64 without padding (43 characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def sign_token(algorithm: str, key_material: bytes | str, claims: dict[str, Any]) -> str:
    """A compact JWS of `claims` signed with the credential's algorithm and key."""
    return pyjwt.encode(claims, key_material, algorithm=algorithm, headers={"typ": "JWT"})


def is_time(seconds: float) -> bool:
    """Whether unix `seconds` is a time from 1970 to LATEST (NaN and infinity are not)."""
    return 0 <= seconds <= LATEST


class ClaimError(ValueError):
    """A claim given for a generated token that verification would refuse (`name`):
    `reason` says why, `advice` how to write it on the command line."""

    def __init__(self, name: str, reason: str, advice: str = ""):
        super().__init__(f"claim {name}: {reason}" + (f" ({advice})" if advice else ""))
        self.name, self.reason = name, reason


def token_claims(key_claim: str, key: str, lifetime: int | None, expires: float | None,
                 extra: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """The payload of a generated token: extra claims, the key, `iat` and `exp`;
    ValueError for a lifetime or an expiry no token can have (one in the past, too),
    ClaimError for a claim of a type that jwt-auth refuses (it would issue a token it then
    refuses), or one fastgw sets itself (the key, exp: it would be replaced unseen)."""
    for name, value in extra.items():
        if name == "exp" or name == key_claim:  # fastgw's own, never silently replaced
            raise ClaimError(name, _SET_BY[name == "exp"], "use --expires or --ttl"
                             if name == "exp" else "")
        if name in _TIME_CLAIMS and (type(value) not in (int, float) or value != value):
            raise ClaimError(name, "must be a number (unix seconds)")
        if name in _STRING_CLAIMS and type(value) is not str:
            raise ClaimError(name, "must be a string",
                             f"with --claim, write a JSON string: {name}='\"42\"'")
    now = int(time.time() if now is None else now)
    claims = dict(extra)
    claims[key_claim] = key
    claims.setdefault("iat", now)
    if expires is not None:
        if not is_time(expires):
            raise ValueError(f"expires {expires!r}: not a time from 1970 to 9999")
        if int(expires) <= now:
            raise ValueError(f"expires {expires!r}: in the past, so the token would be expired "
                             "as it is issued")
        claims["exp"] = int(expires)
    elif lifetime is not None:
        if lifetime < 1 or not is_time(now + lifetime):
            raise ValueError(f"ttl {lifetime!r}: not a number of seconds from 1 to the year 9999")
        claims["exp"] = now + int(lifetime)
    return claims


_SET_BY = ("set by fastgw: the key of the credential that signs the token",
           "set by fastgw: give the expiry as expires or ttl")
_TIME_CLAIMS = frozenset(("exp", "nbf", "iat"))  # RFC 7519 NumericDate
_STRING_CLAIMS = frozenset(("sub", "jti"))  # strings, as revocations name them
