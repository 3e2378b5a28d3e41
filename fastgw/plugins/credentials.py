"""What the authentication plugins share: the identity they hand the upstream, their
credentials' index, and finding a credential in a request.

A credential is looked for in a header (under every -/_ spelling), then a query parameter,
then a cookie; the first place where it is present is the only one read. Given twice in
that place, under any spelling a server behind may read as the same name, it is refused
(`Repeated`): the second copy would reach the upstream unverified, and which one the
upstream reads is its choice.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Callable, Iterator
from urllib.parse import unquote_to_bytes

from ..config.types import Field, Nullable, Str
from ..fields import READ_BY_GATEWAY
from ..responses import Response
from ..spelling import header_names

# The identity headers every authentication plugin sets upstream.
UPSTREAM_HEADERS = (b"x-consumer-username", b"x-credential-identifier")

_NAME = itemgetter(0)
HEADER_NAME = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"  # an RFC 9110 token
VISIBLE = r"[\x21-\x7e]{1,256}"  # safe to send in a header, never a line break
CREDENTIAL_ID = Field(Nullable(Str(pattern=VISIBLE)))


def few_separators(name: str) -> str | None:
    """The header is matched under every -/_ spelling (2 ** separators of them)."""
    if name.count("-") + name.count("_") > 8:
        return "must not hold more than 8 '-' or '_'"
    return None


def cross_check(conf: dict, usernames: set[str]) -> Iterator[tuple[str, str]]:
    """(field, message) for references to other objects that do not exist."""
    anonymous = conf["anonymous_consumer"]
    if anonymous is not None and anonymous not in usernames:
        yield "anonymous_consumer", f"no consumer named {anonymous!r}"


# ---------------------------------------------------------------- identities

class Identity:
    """Who a request is, for the upstream and the access log: `head` is the consumer's
    lines of the upstream request head, built once."""

    __slots__ = ("username", "head")

    def __init__(self, username: str, credential_id: str | None = None):
        self.username = username
        self.head = b"x-consumer-username: " + username.encode() + b"\r\n"
        if credential_id is not None:
            self.head += b"x-credential-identifier: " + credential_id.encode() + b"\r\n"


class Credential(Identity):
    """A consumer's credential, compiled. `revoked` is set when a new configuration no
    longer holds it unchanged (jwt-auth's cached tokens of it are void from then on);
    `source` is what it was compiled from, to tell whether it changed."""

    __slots__ = ("revoked", "source")

    def __init__(self, username: str, conf: dict):
        super().__init__(username, conf["id"])
        self.revoked = False
        self.source = (username, conf)


def index_credentials(consumers: list[dict], previous: dict | None, kind: str,
                      index_key: Callable[[dict], object],
                      make: Callable[[str, dict], Credential]) -> dict:
    """index_key(conf) -> the compiled credential of every credential of type `kind`; one
    unchanged since `previous` keeps its object (and what hangs on it)."""
    previous = previous or {}
    index = {}
    for consumer in consumers:
        username = consumer["username"]
        for conf in consumer["credentials"]:
            if conf["type"] != kind:
                continue
            key = index_key(conf)
            old = previous.get(key)
            if old is not None and old.source == (username, conf):
                index[key] = old
            else:
                index[key] = make(username, conf)
    return index


def retire(old: dict, new: dict) -> None:
    """Mark revoked every credential of `old` the new index does not carry over."""
    for key, cred in old.items():
        if new.get(key) is not cred:
            cred.revoked = True


# ---------------------------------------------------------------- finding it

_QUESTION_MARK = ord("?")


class Repeated(Exception):
    """The credential's header, query parameter or cookie is given more than once."""


def no_credential(ex, anonymous: Identity | None, missing: Response) -> Response | None:
    """A request that holds no credential: `missing` (a 401), or None and the anonymous
    consumer, which never replaces a consumer another plugin verified."""
    if anonymous is None:
        return missing
    if ex.consumer is None:
        ex.consumer = anonymous
    return None


class Places:
    """Where one plugin configuration looks for its credential. `cookie` None: not in a
    cookie. With `hide`, the copy read is removed from what goes upstream."""

    __slots__ = ("header", "only", "plain", "is_header", "query", "query_folded", "cookie",
                 "hide")

    def __init__(self, header: str, query: str, cookie: str | None, hide: bool):
        # The header in every spelling a server behind may read as it (X_Token is X-Token)
        self.header = header_names((header.lower().encode("latin-1"),))
        # its one spelling, when it has only one (no "-" or "_": Authorization) and may be
        # in `ex.fields` (not a field fastgw reads itself, which only `ex.headers` holds)
        self.only = (next(iter(self.header))
                     if len(self.header) == 1 and not self.header & READ_BY_GATEWAY else None)
        # that spelling when the value is only read, not removed: a plugin may then look
        # it up in `ex.fields` itself, and take the general way (`in_header`, ...) when
        # there is no such field, or `fields` is None
        self.plain = None if hide else self.only
        self.is_header = self.header.__contains__
        self.query = query.encode()
        self.query_folded = self.query.lower()
        self.cookie = None if cookie is None else cookie.encode()
        self.hide = hide

    def in_header(self, ex) -> bytes | None:
        """The header's value, None when no copy of it has one."""
        fields = ex.fields  # each name once, when not None
        if fields is not None and self.only is not None:
            value = fields.get(self.only)
            if not value:
                return None
            if self.hide:
                ex.drop_header(self.header)
            return value
        header = self.header
        for name, value in ex.headers:
            if name in header and value:
                # Counted in C over the names, once, after a match.
                if sum(map(self.is_header, map(_NAME, ex.headers))) != 1:
                    raise Repeated
                if self.hide:
                    ex.drop_header(header)
                return value
        return None

    def elsewhere(self, ex) -> bytes | None:
        """The value from the query, else the cookie (the header had none)."""
        if sum(map(self.is_header, map(_NAME, ex.headers))) > 1:  # only empty, but twice
            raise Repeated
        if _QUESTION_MARK in ex.target:  # by its value: b"?" in raises and clears a TypeError
            value = self._from_query(ex)
            if value is not None:
                return value
        return None if self.cookie is None else self._from_cookies(ex)

    def _from_query(self, ex) -> bytes | None:
        """Names are compared percent-decoded, as the upstream's framework will read them
        (`%6Awt` is `jwt`); a name in another case, one after a ";" (a separator to some
        frameworks) and one with a "[...]" suffix (PHP reads `jwt[]` as `jwt`) count as a
        second copy, so that no spelling of a second copy slips past."""
        path, _, query = ex.target.partition(b"?")
        params = query.split(b"&")
        found = None
        copies = 0
        for i, param in enumerate(params):
            for j, part in enumerate(param.split(b";")):
                name = unquote_to_bytes(part.partition(b"=")[0].replace(b"+", b" "))
                if name.lower().partition(b"[")[0] == self.query_folded:
                    copies += 1
                    if j == 0 and name == self.query:
                        found = i
        if copies > 1:
            raise Repeated
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
                            raise Repeated
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
            headers = ex.edit_headers()
            if rest:
                headers[i] = (b"cookie", rest)
            else:
                del headers[i]
        return value.strip(b'"')
