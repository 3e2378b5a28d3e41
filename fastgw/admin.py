"""The admin API (SPEC section 6), served by the master on FASTGW_ADMIN_LISTEN.

Every change is made on a copy of the running configuration, validated whole,
persisted (the file rewritten atomically, or written to etcd in a transaction that
fails with 409 when another change got there first), and put in force in every
worker before the answer is sent; a worker that has not acknowledged it a second after
another did (stopped, or too busy to read) is not waited for, and is named in the log
and in GET /admin/status (`workers_behind`) until it has. Secrets and private keys never
leave in an answer, except a secret the API generated itself, returned once by the PUT that
made it.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import json
import time
from typing import Any
from urllib.parse import unquote

import orjson

from . import __version__, jwt
from .config import ConfigError, schema
from .config.loader import json_object
from .config.sources import Conflict, NotInForce, TooLarge, Unavailable
from .plugins import credential_type, issue_token

MASK = "***"
UNAUTHORISED = orjson.dumps({"error_msg": "missing or wrong X-API-KEY"})


class AdminError(Exception):
    def __init__(self, status: int, message: str, path: str | None = None,
                 allow: tuple[str, ...] = ()):
        super().__init__(message)
        self.status, self.message, self.path = status, message, path
        self.allow = allow  # a 405's methods, for its Allow field

    def headers(self) -> tuple[bytes, ...]:
        """More header lines of the answer: a 405's Allow (RFC 9110 15.5.6: it MUST)."""
        return (b"allow: %s\r\n" % ", ".join(self.allow).encode(),) if self.allow else ()

    def body(self) -> dict:
        out = {"error_msg": self.message}
        if self.path:
            out["path"] = self.path
        return out


def _methods(parts: list[str]) -> tuple[str, ...]:
    """The methods a path of the API takes (SPEC sections 6, 8 and 9); () for a path it
    does not have (404 whatever the method: only a path it has is answered 405)."""
    match parts:
        case ["status"] | ["services"] | ["consumers"] | ["jwks"]:
            return ("GET",)
        case ["config"]:
            return ("GET", "PUT")
        case ["services", _] | ["services", _, "routes", _] | ["consumers", _]:
            return ("GET", "PUT", "DELETE")
        case ["consumers", _, "credentials", _]:
            return ("PUT", "DELETE")
        case ["consumers", _, "credentials", _, "token"] | ["jwks", "refresh"]:
            return ("POST",)
        case ["revocations"]:
            return ("GET", "POST")
        case ["revocations", _]:
            return ("GET", "DELETE")
    return ()


def _masked(conf: dict) -> dict:
    out = copy.deepcopy(conf)
    for consumer in out.get("consumers", []):
        _mask_consumer(consumer)
    return out


def _secret_fields(cred) -> tuple[str, ...]:
    """The fields of a credential the API never returns: its type's SECRET_FIELDS."""
    kind = credential_type(cred) if isinstance(cred, dict) else None
    return () if kind is None else kind.SECRET_FIELDS


def _mask_consumer(consumer: dict) -> dict:
    for cred in consumer.get("credentials", []):
        for field in _secret_fields(cred):
            if cred.get(field):
                cred[field] = MASK
    return consumer


class AdminAPI:
    """Request handling, independent of the HTTP plumbing below it."""

    def __init__(self, master):
        self.master = master
        self.key = master.settings.admin_key.encode()
        # one change at a time, from the configuration it read to the one it commits:
        # two at once each built on the same configuration, and the last lost the first's
        self._changing = asyncio.Lock()

    def authorised(self, given: bytes | None) -> bool:
        # (llhttp leaves the whitespace after a value on it: no part of it, RFC 9112 5)
        return given is not None and hmac.compare_digest(given.rstrip(b" \t"), self.key)

    async def handle(self, method: str, path: str, body: bytes,
                     create_only: bool = False) -> tuple[int, Any]:
        """`create_only` (`If-None-Match: *`, RFC 9110 13.1.2): a PUT of an object that
        exists already is answered 412, never a replacement (what the console's "Create"
        and "Add" send)."""
        # each segment percent-decoded (after the split: %2F is a "/" inside a name), so a
        # credential id holding "<", "#" or "%" can be named in a URL, as browsers must send it
        parts = [unquote(p) for p in path.split("?", 1)[0].split("/") if p]
        if parts[:1] != ["admin"]:
            raise AdminError(404, "not found")
        parts = parts[1:]
        allowed = _methods(parts)
        if not allowed:
            raise AdminError(404, "not found")
        if method not in allowed:  # before its body is read as JSON: no 400 for a 405
            raise AdminError(405, "method not allowed", allow=allowed)
        data = exact = None
        if method in ("PUT", "POST") and body:
            try:
                data = orjson.loads(body)
                # a key twice: refused; and integers whole (orjson makes one above 2^64 a
                # float), for the claims of a token, which are signed as they came
                exact = json.loads(body, object_pairs_hook=json_object)
            except orjson.JSONDecodeError as exc:
                raise AdminError(400, f"body is not JSON: {exc}") from None
            except ConfigError as exc:  # as a file's is (the last would win unseen)
                raise AdminError(400, f"body: {exc.errors[0][1]}") from None
            except RecursionError:  # orjson takes 1,024 levels, json.loads fewer
                raise AdminError(400, "body: is nested too deeply") from None
        conf = self.master.conf
        match (method, parts):
            case ("GET", ["status"]):
                return 200, {"version": __version__, "revision": self.master.source.revision,
                             "workers": [w.pid for w in self.master.workers.values()],
                             "workers_behind": self.master.workers_behind(),
                             "worker_restarts": self.master.restarts,
                             **self.master.source.status()}
            case ("GET", ["config"]):
                return 200, _masked(conf)
            case ("PUT", ["config"]):
                new = self._object(data)
                self._keep_masked_secrets(new.get("consumers"), conf)
                return 200, _masked(await self._commit(new))
            case ("GET", ["services"]):
                return 200, conf["services"]
            case ("GET", ["services", name]):
                return 200, self._find(conf["services"], "name", name, "service")
            case ("PUT", ["services", name]):
                item = self._named(data, "name", name)
                self._absent(create_only, conf["services"], "name", name, "service")
                new = self._replace(conf, "services", "name", name, item)
                saved = await self._commit(new)
                return 200, self._find(saved["services"], "name", name, "service")
            case ("DELETE", ["services", name]):
                return await self._delete(conf, ("services", "name", name, "service"))
            case ("GET", ["services", name, "routes", route]):
                service = self._find(conf["services"], "name", name, "service")
                return 200, self._find(service["routes"], "name", route, "route")
            case ("PUT", ["services", name, "routes", route]):
                item = self._named(data, "name", route)
                new = copy.deepcopy(conf)
                service = self._find(new["services"], "name", name, "service")
                self._absent(create_only, service["routes"], "name", route, "route")
                service["routes"] = self._upsert(service["routes"], "name", route, item)
                saved = await self._commit(new)
                service = self._find(saved["services"], "name", name, "service")
                return 200, self._find(service["routes"], "name", route, "route")
            case ("DELETE", ["services", name, "routes", route]):
                return await self._delete(conf, ("services", "name", name, "service"),
                                          ("routes", "name", route, "route"))
            case ("GET", ["consumers"]):
                return 200, [_mask_consumer(c) for c in copy.deepcopy(conf["consumers"])]
            case ("GET", ["consumers", username]):
                found = self._find(conf["consumers"], "username", username, "consumer")
                return 200, _mask_consumer(copy.deepcopy(found))
            case ("PUT", ["consumers", username]):
                item = self._named(data, "username", username)
                self._absent(create_only, conf["consumers"], "username", username, "consumer")
                self._keep_masked_secrets([item], conf)
                new = self._replace(conf, "consumers", "username", username, item)
                saved = await self._commit(new)
                found = self._find(saved["consumers"], "username", username, "consumer")
                return 200, _mask_consumer(copy.deepcopy(found))
            case ("DELETE", ["consumers", username]):
                return await self._delete(conf, ("consumers", "username", username, "consumer"))
            case ("PUT", ["consumers", username, "credentials", cred_id]):
                return await self._put_credential(username, cred_id, data, create_only)
            case ("DELETE", ["consumers", username, "credentials", cred_id]):
                return await self._delete(conf, ("consumers", "username", username, "consumer"),
                                          ("credentials", "id", cred_id, "credential"))
            case ("GET", ["jwks"]):
                return 200, self.master.jwks.status()
            case ("POST", ["jwks", "refresh"]):
                return 200, await self.master.jwks.refresh_all()
            case ("POST", ["consumers", username, "credentials", cred_id, "token"]):
                return 200, {"token": self._token(username, cred_id,
                                                  {} if exact is None else exact)}
            case (_, ["revocations", *rest]):  # SPEC section 9: revocation_store.py
                return await self.master.revocations.admin(method, rest, data)
        raise AdminError(404, "not found")  # (_methods has answered any other)

    # ------------------------------------------------------------ pieces

    @staticmethod
    def _object(data) -> dict:
        if not isinstance(data, dict):
            raise AdminError(400, "body must be a JSON object")
        return data

    def _named(self, data, field: str, name: str) -> dict:
        item = dict(self._object(data))
        if item.setdefault(field, name) != name:
            raise AdminError(400, f"{field} {item[field]!r} differs from the URL's {name!r}",
                             field)
        return item

    @staticmethod
    def _find(items: list[dict], field: str, value: str, what: str) -> dict:
        for item in items:
            if item.get(field) == value:
                return item
        raise AdminError(404, f"no {what} {value!r}")

    async def _delete(self, conf: dict, *steps: tuple[str, str, str, str]):
        """DELETE of the object at the end of `steps`; each step is (list, the field that
        names its items, the name, what it is called in a 404): service, then route."""
        new = owner = copy.deepcopy(conf)
        for section, field, value, what in steps[:-1]:
            owner = self._find(owner[section], field, value, what)
        section, field, value, what = steps[-1]
        self._find(owner[section], field, value, what)
        owner[section] = [item for item in owner[section] if item.get(field) != value]
        await self._commit(new)
        return 200, {"deleted": value}

    @staticmethod
    def _absent(create_only: bool, items: list[dict], field: str, value: str,
                what: str) -> None:
        if create_only and any(i.get(field) == value for i in items):
            raise AdminError(412, f"{what} {value!r} exists already", field)

    @staticmethod
    def _upsert(items: list[dict], field: str, value: str, item: dict) -> list[dict]:
        out = [item if i.get(field) == value else i for i in items]
        if not any(i.get(field) == value for i in items):
            out.append(item)
        return out

    def _replace(self, conf: dict, section: str, field: str, value: str, item: dict) -> dict:
        new = copy.deepcopy(conf)
        new[section] = self._upsert(new[section], field, value, item)
        return new

    @staticmethod
    def _keep_masked_secrets(consumers, conf: dict) -> None:
        """A secret sent back as "***" (from a GET) keeps the value it stands for."""
        current = {(c["username"], cred["id"]): cred for c in conf["consumers"]
                   for cred in c["credentials"]}
        for consumer in consumers if isinstance(consumers, list) else ():  # else: validated
            if not isinstance(consumer, dict) or not isinstance(consumer.get("credentials"),
                                                                list):
                continue
            username, creds = consumer.get("username"), consumer["credentials"]
            if not isinstance(username, str):
                continue  # refused by validation, whatever its credentials hold
            for cred, cred_id in zip(creds, schema.credential_ids(username, creds)):
                if not isinstance(cred, dict):
                    continue
                masked = [field for field in _secret_fields(cred) if cred.get(field) == MASK]
                if not masked:
                    continue
                old = current.get((username, cred_id))
                # "***" stands for the secret of the same credential, of the same type: a
                # masked field of another type's credential (its public key) is no secret
                same = old is not None and credential_type(old) is credential_type(cred)
                for field in masked:
                    if not same:
                        raise AdminError(400, f"{field}: {MASK!r} is not a value", field)
                    cred[field] = old[field]

    async def _put_credential(self, username: str, cred_id: str, data,
                              create_only: bool) -> tuple[int, dict]:
        cred = self._named(data, "id", cred_id)
        new = copy.deepcopy(self.master.conf)
        consumer = self._find(new["consumers"], "username", username, "consumer")
        self._absent(create_only, consumer["credentials"], "id", cred_id, "credential")
        self._keep_masked_secrets([{"username": username, "credentials": [cred]}],
                                  self.master.conf)
        kind = credential_type(cred)
        generated = kind.generate_secret(cred) if kind is not None else None
        consumer["credentials"] = self._upsert(consumer["credentials"], "id", cred_id, cred)
        saved = await self._commit(new)
        owner = self._find(saved["consumers"], "username", username, "consumer")
        answer = _mask_consumer({"credentials": [copy.deepcopy(
            self._find(owner["credentials"], "id", cred_id, "credential"))]})["credentials"][0]
        if generated:
            answer[generated] = cred[generated]  # shown this once, never again
        return 200, answer

    def _token(self, username: str, cred_id: str, data) -> str:
        data = self._object(data)
        consumer = self._find(self.master.conf["consumers"], "username", username, "consumer")
        cred = self._find(consumer["credentials"], "id", cred_id, "credential")
        claims = data.get("claims")
        if claims is None:
            claims = {}
        elif not isinstance(claims, dict):
            raise AdminError(400, "claims must be an object", "claims")
        expires, ttl = data.get("expires"), data.get("ttl")
        now = time.time()
        if expires is not None and (isinstance(expires, bool)
                                    or not isinstance(expires, (int, float))
                                    or not jwt.is_time(expires)):
            raise AdminError(400, "expires must be unix seconds, from 1970 to 9999", "expires")
        if expires is not None and int(expires) <= int(now):  # its exp and iat, as signed
            raise AdminError(400, "expires: is in the past (the token would be expired as it is "
                             "issued)", "expires")  # as a revocation's expires is refused
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1
                                or not jwt.is_time(now + ttl)):
            raise AdminError(400, "ttl must be a positive integer, ending before 9999", "ttl")
        if ttl is not None and expires is not None:
            raise AdminError(400, "ttl and expires: give one, not both", "ttl")
        try:
            return issue_token(cred, claims, ttl, expires, now=now)
        except jwt.ClaimError as exc:
            path = f"claims.{exc.name}"  # a path and its reason, as every other 400 says
            raise AdminError(400, f"{path}: {exc.reason}", path) from None
        except ValueError as exc:
            raise AdminError(400, str(exc)) from None

    async def _commit(self, new: dict) -> dict:
        """Validate whole, persist, put in force everywhere; the normalised result."""
        try:
            conf = schema.validate(new)
        except ConfigError as exc:
            path, message = exc.errors[0]
            # a name, id or key another object has; a value twice in one list is no conflict
            status = (409 if message.startswith("duplicate")
                      and not message.startswith("duplicate value") else 400)
            raise AdminError(status, f"{path}: {message}", path) from None
        try:
            return await self.master.commit(conf)
        except Conflict as exc:
            raise AdminError(409, str(exc)) from None
        except Unavailable as exc:
            raise AdminError(503, str(exc)) from None
        except TooLarge as exc:
            raise AdminError(400, str(exc)) from None
        except NotInForce as exc:
            raise AdminError(500, str(exc)) from None

    def admit(self, method: str, target: str, headers: dict):
        """ControlProtocol's check of a request's head: a request without the key is
        answered 401 before its body is read (the body is then dropped, never held)."""
        if self.authorised(headers.get(b"x-api-key")):
            return None
        return 401, b"application/json", UNAUTHORISED

    async def http(self, method: str, target: str, headers: dict, body: bytes):
        """The ControlProtocol handler: key check, then `handle`, answered as JSON."""
        try:
            if not self.authorised(headers.get(b"x-api-key")):  # (admit has answered it)
                return 401, b"application/json", UNAUTHORISED
            if method == "GET":
                status, answer = await self.handle(method, target, body)
            else:
                create_only = headers.get(b"if-none-match", b"").strip() == b"*"
                async with self._changing:
                    status, answer = await self.handle(method, target, body, create_only)
        except AdminError as exc:
            return exc.status, b"application/json", orjson.dumps(exc.body()), *exc.headers()
        return status, b"application/json", orjson.dumps(answer)
