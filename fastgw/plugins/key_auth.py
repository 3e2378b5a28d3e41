"""The `key-auth` plugin (SPEC section 11, as APISIX's): a consumer's API key, in a header
or else a query parameter.

Keys are secrets. The index is keyed by a keyed hash of each key (BLAKE2b under a key
drawn when the process starts), so that looking a presented key up reveals nothing
through timing about the keys held; the one credential it finds is then compared to the
presented key in constant time (`hmac.compare_digest`). Keys never appear in a log line
or an error message.
"""

from __future__ import annotations

import hmac
import os
from hashlib import blake2b

import orjson

from .. import jwt
from ..config.types import Bool, Field, Nullable, Obj, Str
from ..responses import BAD_REQUEST, Response
from . import credentials
from .credentials import Identity, Places, Repeated, no_credential

NAME = "key-auth"
PRIORITY = 2500  # as in APISIX: after jwt-auth (2510)
UPSTREAM_HEADERS = credentials.UPSTREAM_HEADERS
CREDENTIAL_TYPE = "key-auth"
SECRET_FIELDS = ("key",)

SCHEMA = Obj({
    "header": Field(Str(credentials.few_separators, pattern=credentials.HEADER_NAME),
                    default="apikey"),
    "query": Field(Str(), default="apikey"),
    "hide_credentials": Field(Bool(), default=False),
    "anonymous_consumer": Field(Nullable(Str())),
})

cross_check = credentials.cross_check


def _api_key(value: str) -> str | None:
    """Checked without echoing the value: an error message must not carry a key."""
    if not 1 <= len(value) <= 256 or not value.isascii() or not value.isprintable() \
            or " " in value:
        return "must be 1 to 256 visible ASCII characters (the value is not shown)"
    return None


CREDENTIAL_SCHEMA = Obj({
    "id": credentials.CREDENTIAL_ID,
    "type": Field(Str(choices=(CREDENTIAL_TYPE,)), default=CREDENTIAL_TYPE),
    "key": Field(Str(_api_key), required=True),
})


def default_id(username: str, cred: dict, nth: int) -> str:
    """Never derived from the key, which is a secret and would reach the upstream as
    X-Credential-Identifier: the consumer's name, numbered from its second key on."""
    return f"{username}-key-auth" + (f"-{nth}" if nth > 1 else "")


def generate_secret(cred: dict) -> str | None:
    """Fill in a missing key (an unvalidated credential from the admin API); the field
    generated, or None."""
    if cred.get("key") in (None, ""):  # a key of another kind is the schema's to refuse
        cred["key"] = jwt.new_secret()
        return "key"
    return None


# ---------------------------------------------------------------- credentials

# keyed per process (the index's hashes mean nothing elsewhere), set up once: a copy of a
# prepared hasher costs about half of keying a new one on each request
_HASHER = blake2b(key=os.urandom(32), digest_size=16)


def _digest(key: bytes) -> bytes:
    hasher = _HASHER.copy()
    hasher.update(key)
    return hasher.digest()


class Credential(credentials.Credential):
    """A consumer's API key, compiled."""

    __slots__ = ("key",)

    def __init__(self, username: str, conf: dict):
        super().__init__(username, conf)
        self.key = conf["key"].encode()


def index_credentials(consumers: list[dict], previous: dict[bytes, Credential] | None
                      ) -> dict[bytes, Credential]:
    """Keyed hash of the key -> Credential; an unchanged credential keeps its object."""
    return credentials.index_credentials(consumers, previous, CREDENTIAL_TYPE,
                                         lambda conf: _digest(conf["key"].encode()), Credential)




# ---------------------------------------------------------------- responses

# RFC 9110 11.6.1: a 401 carries a challenge. SPEC section 11 names none; Kong's
# key-auth sends this scheme (realm "kong"), and the realm is jwt-auth's
CHALLENGE = 'Key realm="fastgw"'


def _unauthorized(message: str, reason: str) -> Response:
    return Response(401, orjson.dumps({"message": message}),
                    (("www-authenticate", CHALLENGE),), reason=reason)


MISSING_KEY = _unauthorized("Missing API key in request", "missing_api_key")
INVALID_KEY = _unauthorized("Invalid API key in request", "invalid_api_key")


# ---------------------------------------------------------------- the plugin

class KeyAuth:
    """One route's (or service's) key-auth configuration, ready for requests."""

    __slots__ = ("places", "anonymous", "credentials")

    def __init__(self, conf: dict, snapshot):
        self.places = Places(conf["header"], conf["query"], None, conf["hide_credentials"])
        anonymous = conf["anonymous_consumer"]
        self.anonymous = None if anonymous is None else Identity(anonymous)
        self.credentials = snapshot.credentials[CREDENTIAL_TYPE]

    def access(self, ex) -> Response | None:
        """None lets the request through (ex.consumer set); else the answer: a 401, or
        a 400 (connection closed) when the key is given twice. The header wins: with a
        key in the header, the query is not read."""
        try:
            key = self.places.in_header(ex)
            if key is None:
                key = self.places.elsewhere(ex)
                if key is None:
                    return no_credential(ex, self.anonymous, MISSING_KEY)
        except Repeated:
            ex.refuse(BAD_REQUEST)
            return BAD_REQUEST
        key = key.strip(b" \t")  # not part of the value (RFC 9110 5.5)
        cred = self.credentials.get(_digest(key))
        if cred is None or not hmac.compare_digest(cred.key, key):
            return INVALID_KEY
        ex.consumer = cred
        return None


def build(conf: dict, snapshot) -> KeyAuth:
    return KeyAuth(conf, snapshot)
