"""Revocation (SPEC section 9): what an entry is, and the index every worker checks tokens with.

An entry refuses tokens by their claims, never by their text (one token has several
spellings that verify: padding, base64 alphabet, ECDSA high-S): by `jti`, or by `sub` for
every token issued before `issued_before` (a token without `iat` counts as issued before
any time), in both cases optionally only for one `iss`; it is in force until `expires`
(the token's own `exp`, usually), and for a token whose credential accepts it past its
`exp` (`lifetime_grace_period`) until `expires` plus that grace; the master forgets it
when the longest grace of the configuration has passed too (revocation_store.py).

Request time. When jwt-auth verifies a token it keeps, in its cache entry, the claims a
revocation looks at (`claims_of`): `("jti:" + jti, "sub:" + sub, iat, iss, grace)`. The worker's
index is one dict whose keys are `"jti:..."` and `"sub:..."`; on every request (a cache hit
or a fresh verification) `unlisted(claims)`, the dict's `keys().isdisjoint`, says in C and
without a Python frame that no claim of the token is a key, which is the answer for
nearly every token, whether the index holds no entry or a hundred thousand. Only a token
whose jti or sub is listed goes on to `revoked`, which compares `iss`, `iat` and
`expires` exactly. (An `iss`, `iat` or grace value can never equal a key, or at worst an
`iss` spelled like one sends the token to the exact check: the shortcut can only be
cautious.)

The index is changed in place by the master's messages (`apply`), so `unlisted` stays bound
to the same dict for the life of the process; the master sends every entry to a new worker
before its first configuration, then each change, and prunes expired entries itself.
"""

from __future__ import annotations

import math
import secrets
import time

from .jwt import is_time

DEFAULT_LIFETIME = 30 * 86400  # seconds an entry lives when it names no `expires`
MAX_LIFETIME = 10 * 366 * 86400  # an entry may not outlive ten years
MAX_CLAIM_LENGTH = 4096  # characters of a jti, sub or iss in an entry
FIELDS = ("jti", "sub", "issued_before", "iss", "expires")
STORED_FIELDS = ("id", *FIELDS, "created")  # what the admin API answers and stores keep

_NUMBER = (int, float)  # bool is no number here: type(True) is bool


class EntryError(ValueError):
    """A bad entry: the field at fault (`path`) and why."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path, self.message = path, message


# ---------------------------------------------------------------- entries

def new_id() -> str:
    """An entry's id: random, URL- and etcd-key-safe."""
    return secrets.token_urlsafe(12)


def _claim(data: dict, name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if type(value) is not str or not value:
        raise EntryError(name, "must be a non-empty string")
    if len(value) > MAX_CLAIM_LENGTH:
        raise EntryError(name, f"must be at most {MAX_CLAIM_LENGTH} characters")
    return value


def _time(data: dict, name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if type(value) not in _NUMBER or not is_time(value):
        raise EntryError(name, "must be a time in unix seconds (a number from 0, 1970, "
                               "to 253402300799, 9999)")
    return value


def parse(data, now: float, keep: float = 0) -> dict:
    """A new entry from an admin API body: validated, `expires` filled in; no id yet.
    EntryError names the first field at fault. `expires` may have passed by less than
    `keep` seconds (a token in its grace period can be revoked still)."""
    if not isinstance(data, dict):
        raise EntryError("", "body must be a JSON object")
    for name in data:
        if name not in FIELDS:
            raise EntryError(str(name), f"is not a field of a revocation (fields: "
                                        f"{', '.join(FIELDS)})")
    jti, sub, iss = _claim(data, "jti"), _claim(data, "sub"), _claim(data, "iss")
    issued_before, expires = _time(data, "issued_before"), _time(data, "expires")
    if jti is not None and sub is not None:
        raise EntryError("sub", "an entry names a jti or a sub, not both")
    if jti is None and sub is None:
        raise EntryError("jti", "is required (or sub with issued_before)")
    if jti is not None and issued_before is not None:
        raise EntryError("issued_before", "goes with sub, not with jti")
    if sub is not None and issued_before is None:
        raise EntryError("issued_before", "is required with sub (unix seconds: tokens "
                                          "issued before it are revoked)")
    if expires is None:
        expires = now + DEFAULT_LIFETIME
    elif expires + keep <= now:
        raise EntryError("expires", "is in the past")
    elif expires > now + MAX_LIFETIME:
        raise EntryError("expires", "is more than ten years ahead")
    entry = {"jti": jti} if jti is not None else {"sub": sub, "issued_before": issued_before}
    if iss is not None:
        entry["iss"] = iss
    entry["expires"] = expires
    return entry


def parse_stored(data, now: float, keep: float) -> dict | None:
    """An entry read back (the revocations file, etcd, a snapshot): validated as the admin
    API would, its id and creation time kept; None when it expired `keep` seconds ago or
    more. EntryError when it is not an entry."""
    if not isinstance(data, dict):
        raise EntryError("(entry)", "must be a JSON object")
    entry_id, created = data.get("id"), data.get("created")
    if type(entry_id) is not str or not entry_id or "/" in entry_id:
        raise EntryError("id", "must be a non-empty string without /")
    expires = _time(data, "expires")
    if expires is not None and expires + keep <= now:
        return None
    fields = {name: data[name] for name in FIELDS if name in data}
    entry = {"id": entry_id, **parse(fields, now, keep)}
    if type(created) in _NUMBER:
        entry["created"] = created
    return entry


# ---------------------------------------------------------------- the worker's index

# "jti:<jti>" or "sub:<sub>" -> the entries with that key, each a tuple
# (id, key, iss or None, issued_before (inf for a jti), expires)
_index: dict[str, tuple[tuple, ...]] = {}
_by_id: dict[str, tuple] = {}

unlisted = _index.keys().isdisjoint  # (claims) -> True when no claim is a key: not revoked


_CLAIMS = ("jti", "sub", "iat", "iss")


def claims_of(payload: dict, grace: float) -> tuple:
    """What a revocation looks at in a verified token's payload, for its cache entry, and
    the seconds past its exp the token is accepted (`grace`). jwt-auth has refused a token
    whose jti or sub is not a string; an iss that is not one can equal no entry's (they
    are strings) and is kept as None; `iat` has been checked to be a number when present."""
    jti, sub, iat, iss = map(payload.get, _CLAIMS)  # one C loop for the four look-ups
    return ("jti:" + jti if jti is not None else None,
            "sub:" + sub if sub is not None else None,
            iat, iss if type(iss) is str else None, grace)


def revoked(claims: tuple) -> bool:
    """The exact check, for a token whose jti or sub is a key of the index."""
    jti_key, sub_key, iat, iss, grace = claims
    now = time.time() - grace  # an entry ending at the token's exp outlasts its grace
    for key in (jti_key, sub_key):
        for _, _, scope, before, expires in _index.get(key, ()):
            if now < expires and (scope is None or scope == iss) and (
                    iat is None or iat < before):
                return True
    return False


def _compiled(entry: dict) -> tuple:
    if "jti" in entry:
        key, before = "jti:" + entry["jti"], math.inf
    else:
        key, before = "sub:" + entry["sub"], entry["issued_before"]
    return (entry["id"], key, entry.get("iss"), before, entry["expires"])


def _add(entry: dict) -> None:
    item = _compiled(entry)
    if item[0] in _by_id:
        _drop(item[0])
    _by_id[item[0]] = item
    _index[item[1]] = _index.get(item[1], ()) + (item,)


def _drop(entry_id: str) -> None:
    item = _by_id.pop(entry_id, None)
    if item is None:
        return
    rest = tuple(other for other in _index[item[1]] if other[0] != entry_id)
    if rest:
        _index[item[1]] = rest
    else:
        del _index[item[1]]


def apply(change: dict) -> None:
    """A change from the master: `{"reset": true}` first forgets every entry, then the ids
    in `remove` go and the entries in `add` come (an id seen again replaces its entry)."""
    if change.get("reset"):
        _index.clear()
        _by_id.clear()
    for entry_id in change.get("remove", ()):
        _drop(entry_id)
    for entry in change.get("add", ()):
        _add(entry)


def count() -> int:
    """Entries in this process's index."""
    return len(_by_id)
