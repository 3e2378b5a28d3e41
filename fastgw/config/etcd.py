"""Cluster mode: the configuration in etcd, shared live by every node.

Each service is the key `{prefix}/services/{name}` and each consumer
`{prefix}/consumers/{username}`, holding the JSON object a file would. The master
reads the prefix with one range request, then watches it from the next revision.
A lost connection is retried with capped exponential back-off (the next endpoint
each time) and the watch resumes where it stopped; when etcd has compacted that
history away, everything is read again.

Every value is validated on its own, and the whole against the rules that span
objects. A value that fails is logged with its key and field and skipped: the node
keeps the last good version of that object. The admin API writes in transactions
that compare mod revisions, so a write made from a stale view gets 409.

Each write (the admin API's, `fastgw push`) also writes the key `{prefix}/changed`, and
requires that it did not change since the configuration the write was validated against
was read: two changes through two nodes at once never both pass, though each touches
other objects (a service naming a consumer, and that consumer's deletion; two services
sharing a node with different pools), which would leave the nodes disagreeing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")  # workers are fork+exec'd
import aetcd  # noqa: E402 (after the gRPC setting above)
import grpc  # noqa: E402
import orjson  # noqa: E402
from aetcd.exceptions import ClientError, InvalidArgumentError, RevisionCompactedError
from aetcd.rtypes import EventKind
from aetcd.utils import prefix_range_end

from . import ConfigError, gc_paused, schema
from ..revocation_store import EtcdStore, Revocations
from .loader import replace_file
from .sources import Conflict, OnChange, StartError, TooLarge, Unavailable

log = logging.getLogger("fastgw")

CALL_TIMEOUT = 5.0          # seconds for one etcd request (and for the first read)
BACKOFF_FIRST, BACKOFF_CAP = 0.2, 3.0   # seconds between reconnection attempts
GRPC_OPTIONS = {
    "grpc.keepalive_time_ms": 10_000,      # notice a silent etcd, not only a closed socket
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.max_receive_message_length": -1,  # a large configuration is one range response
}
_TRANSACTIONS = aetcd.client.Transactions()  # builders of compares and operations
_UNREACHABLE = (ClientError, asyncio.TimeoutError, OSError)
_ITEM_PATH = re.compile(r"(services|consumers)\[(\d+)\]\.?(.*)")
_ITEM_REF = re.compile(r"(services|consumers)\[(\d+)\]\.?")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class ClusterState:
    """The validated objects under the prefix, and the configuration they make."""

    def __init__(self, prefix: str):
        self.root = prefix + "/"
        self.items: dict[str, dict] = {}       # key -> last good object
        # keys deleted in etcd but kept, as an object still uses them: deleted with the last use
        self.kept: set[str] = set()
        self.latest: dict[str, tuple[int, bool]] = {}  # key -> (mod revision, exists)
        self.revision = 0
        self.conf: dict = {"services": [], "consumers": []}
        self.skipped = 0  # values skipped so far (_skip)

    @property
    def changed_key(self) -> str:
        """The key every write by fastgw puts (see the module docstring)."""
        return f"{self.root}changed"

    def key(self, section: str, name: str) -> str:
        return f"{self.root}{section}/{name}"

    def section_of(self, key: str) -> tuple[str, str] | None:
        section, _, name = key.removeprefix(self.root).partition("/")
        if section in schema.SECTIONS and name and "/" not in name:
            return section, name
        return None

    def mod_revision(self, key: str) -> int:
        """The key's mod revision in etcd as last seen; 0 when it does not exist."""
        revision, exists = self.latest.get(key, (0, False))
        return revision if exists else 0

    def objects_of(self, conf: dict) -> dict[str, dict]:
        """A configuration's objects by key."""
        return {self.key(section, item[schema.SECTIONS[section][1]]): item
                for section in schema.SECTIONS for item in conf[section]}

    def forget_revisions(self) -> None:
        """Before a read of another history: no mod revision seen is comparable to its."""
        self.latest.clear()
        self.revision = 0

    def use_snapshot(self, conf: dict, revision: int) -> None:
        self.items = self.objects_of(conf)
        self.conf, self.revision = conf, revision

    def update(self, changes: dict[str, tuple[int, bytes | None]], revision: int) -> bool:
        """Apply puts (a value) and deletes (None) seen at their mod revisions; what does
        not validate is logged and skipped. True when the configuration changed."""
        items = dict(self.items)
        changed = set()
        for key, (mod_revision, value) in changes.items():
            if key == self.changed_key:
                continue  # no object
            if self.latest.get(key, (0, False))[0] >= mod_revision:
                continue  # already seen (our own write, or a replayed event)
            self.latest[key] = (mod_revision, value is not None)
            self.kept.discard(key)
            if value is None:
                if items.pop(key, None) is not None:
                    changed.add(key)
                continue
            try:
                items[key] = self._parse(key, value)
            except ConfigError as exc:
                self._skip(key, exc.first_line())
                continue
            changed.add(key)
        self.revision = max(self.revision, revision)
        if changed:  # a kept deletion is tried again with every change
            for key in self.kept:
                if items.pop(key, None) is not None:
                    changed.add(key)
        if not changed or not self._check_whole(items, changed):
            return False
        self.kept &= items.keys()
        self.items = items
        self.conf = self._assemble(items, sorted(items))[0]
        return True

    def _parse(self, key: str, value: bytes) -> dict:
        where = self.section_of(key)
        if where is None:
            raise ConfigError([("(key)", f"is not {self.root}services/NAME or "
                                         f"{self.root}consumers/NAME")])
        section, name = where
        try:
            raw = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise ConfigError([("(value)", f"is not JSON: {exc}")]) from None
        if isinstance(raw, dict):
            field = schema.SECTIONS[section][1]
            if raw.setdefault(field, name) != name:
                raise ConfigError([(field, f"{raw[field]!r} differs from the key's {name!r}")])
        return schema.validate_item(section, raw)

    def _skip(self, key: str, reason: str) -> None:
        self.skipped += 1
        kept = ("keeping its last good version" if key in self.items
                else "it stays out of the configuration")
        log.error("etcd key %s skipped: %s; %s", key, reason, kept)

    def _check_whole(self, items: dict[str, dict], changed: set[str]) -> bool:
        """Apply the rules that span objects, reverting changed objects that break them.
        Changed objects come last, so a duplicate is reported on the newcomer."""
        for _ in range(len(changed) + 1):
            order = sorted(items.keys() - changed) + sorted(changed & items.keys())
            conf, keys = self._assemble(items, order)
            try:
                schema.check_whole(conf)
                return bool(changed)
            except ConfigError as exc:
                path, message = exc.errors[0]
            match = _ITEM_PATH.fullmatch(path)
            if match is None:
                break
            culprit = keys[match[1]][int(match[2])]
            message = _ITEM_REF.sub(lambda m: keys[m[1]][int(m[2])] + " ", message)
            if culprit in changed:
                self._skip(culprit, f"{match[3] or '(top level)'}: {message}")
                reverted = [culprit]
            else:  # an unchanged object lost something it uses: a consumer was deleted
                reverted = [k for k in changed if k not in items and k in self.items]
                for key in reverted:
                    if key not in self.kept:
                        log.error("etcd key %s was deleted but %s still uses it (%s); keeping "
                                  "it until nothing does", key, culprit, message)
                    self.kept.add(key)
            if not reverted:
                break
            for key in reverted:
                changed.discard(key)
                if key in self.items:
                    items[key] = self.items[key]
                else:
                    items.pop(key, None)
        log.error("etcd changes up to revision %d break the configuration; keeping revision "
                  "%d's objects", self.revision, self.revision)
        return False

    def _assemble(self, items: dict[str, dict], order: list[str]):
        """The configuration with objects in `order`, and each section's keys by index."""
        conf: dict = {section: [] for section in schema.SECTIONS}
        keys: dict[str, list[str]] = {section: [] for section in schema.SECTIONS}
        for key in order:
            section = self.section_of(key)[0]
            conf[section].append(items[key])
            keys[section].append(key)
        return conf, keys


class EtcdSource:
    """The configuration in etcd, followed live (see the module docstring)."""

    def __init__(self, settings):
        self.endpoints: tuple[tuple[str, int], ...] = settings.etcd
        self.prefix: str = settings.etcd_prefix
        self.snapshot_path: str = settings.etcd_cache
        self.state = ClusterState(self.prefix)
        self.connected = False
        self._client: aetcd.Client | None = None
        self._endpoint = 0
        self._on_change: OnChange | None = None
        self._follower: asyncio.Task | None = None
        self._pending: dict[str, tuple[int, bytes | None]] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._read_everything = False  # set when the watch cannot resume
        # revocation entries under {prefix}/revocations/ (revocation_store.py)
        self.revocations = Revocations(EtcdStore(self, self.state.root))

    @property
    def conf(self) -> dict:
        return self.state.conf

    @property
    def revision(self) -> int:
        return self.state.revision

    @property
    def where(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in self.endpoints) + " " + self.prefix

    def status(self) -> dict:
        return {"config_source": f"etcd {self.where}", "etcd_connected": self.connected}

    # ------------------------------------------------------------ start and follow

    async def start(self) -> None:
        """Read everything from the first endpoint that answers, else the snapshot."""
        for _ in self.endpoints:
            try:
                await asyncio.wait_for(self._read_all(), CALL_TIMEOUT)
                break
            except _UNREACHABLE as exc:
                reason = _reason(exc)
                await self._disconnect()
        else:
            self._start_from_snapshot(reason)
            return
        self.connected = True
        self._save_snapshot()
        log.info("configuration from etcd %s at revision %d (%d services, %d consumers)",
                 self.where, self.revision, len(self.conf["services"]),
                 len(self.conf["consumers"]))

    def follow(self, on_change: OnChange) -> None:
        self._on_change = on_change
        self._follower = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        """Watch for as long as the node runs; reconnect and catch up after a loss."""
        delay = BACKOFF_FIRST
        while True:
            try:
                if self._read_everything:
                    await self._read_all()
                    self._read_everything = False
                client = self._connect()
                if not self._read_everything and self.revision:
                    await self._check_not_behind(client)
                watch = await client.watch_prefix(self.state.root.encode(),
                                                  start_revision=self.revision + 1)
                if not self.connected:
                    self.connected = True
                    log.warning("etcd reachable again at %s; following from revision %d",
                                self.where, self.revision)
                delay = BACKOFF_FIRST
                async for event in watch:
                    self._queue(event)
                raise ClientError("the watch was cancelled")
            except RevisionCompactedError:
                log.warning("etcd compacted its history past revision %d; reading the whole "
                            "configuration again", self.revision)
                self._read_everything = True
            except Exception as exc:
                if self.connected:
                    self.connected = False
                    log.warning("etcd lost (%s); serving configuration revision %d and "
                                "reconnecting", _reason(exc), self.revision)
                if not isinstance(exc, _UNREACHABLE):
                    log.exception("unexpected failure following etcd")
                await self._disconnect()
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_CAP)

    async def _check_not_behind(self, client) -> None:
        """An etcd whose revision is below the one this node has seen is another history
        (a new cluster, or one restored from a backup): its events would all be taken for
        ones already seen, so everything is read again from it."""
        now = (await client.get_prefix(self.state.changed_key.encode())).header.revision
        if now < self.revision:
            log.warning("etcd is at revision %d, before the %d this node has seen (a new or "
                        "restored etcd); reading the whole configuration again", now,
                        self.revision)
            self.state.forget_revisions()
            await self._read_all()

    def _queue(self, event) -> None:
        """Gather the events that arrive together (one transaction) into one change."""
        value = None if event.kind == EventKind.DELETE else event.kv.value
        self._pending[event.kv.key.decode()] = (event.kv.mod_revision, value)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        changes, self._pending = self._pending, {}
        if changes:
            self._update(changes, max(revision for revision, _ in changes.values()))

    def _update(self, changes: dict, revision: int, announce: bool = True,
                everything: bool = False) -> bool:
        """Apply changes to the state; announce the new configuration to the master
        (unless the caller puts it in force itself). Revocation keys are taken out first
        (`everything`: the changes are a full read)."""
        revoked = self.revocations.store.absorb(changes, everything)
        with gc_paused():
            if not self.state.update(changes, revision):
                if revoked:
                    self._save_snapshot()
                return False
        self._save_snapshot()
        if announce and self._on_change is not None:
            log.info("configuration revision %d from etcd", self.revision)
            self._on_change(self.conf)
        return True

    async def _read_all(self, announce: bool = True) -> bool:
        """One range read of the whole prefix, applied as a change; True if it was one."""
        self._flush()
        client = self._connect()
        found = await client.get_prefix(self.state.root.encode())
        revision = found.header.revision
        changes = {kv.key.decode(): (kv.mod_revision, kv.value) for kv in found}
        for key in (self.state.items.keys() | self.state.latest.keys()) - changes.keys():
            changes[key] = (revision, None)
        return self._update(changes, revision, announce, everything=True)

    def keep(self, conf: dict) -> None:
        """The workers could not compile what was read: etcd still holds it, and the
        workers keep the configuration in force until a change they can compile."""

    async def reload(self) -> dict | None:
        """SIGHUP: read everything again (the watch normally makes this unnecessary)."""
        try:
            await asyncio.wait_for(self._read_all(announce=False), CALL_TIMEOUT)
        except _UNREACHABLE as exc:
            log.error("reload from etcd failed (%s); keeping revision %d", _reason(exc),
                      self.revision)
            return None
        return self.conf

    # ------------------------------------------------------------ writes

    async def commit(self, conf: dict) -> dict:
        """Write what differs from the configuration in force, in one transaction that
        fails if any object written changed since this node saw it; the new
        configuration. Credential keys are unique across consumers, so a write to a
        consumer also requires that no consumer changed since."""
        state = self.state
        old, new = state.objects_of(state.conf), state.objects_of(conf)
        puts = {key: orjson.dumps(item) for key, item in new.items() if old.get(key) != item}
        deletes = [key for key in old if key not in new]
        if not puts and not deletes:
            return self.conf
        txn = _TRANSACTIONS
        compares = [txn.mod(key.encode()) == state.mod_revision(key) for key in [*puts, *deletes]]
        # no change by fastgw since, and none to a consumer (a key is unique across them)
        compares.append(txn.mod(state.changed_key.encode()) < state.revision + 1)
        consumers = state.key("consumers", "")
        if any(key.startswith(consumers) for key in puts):
            compares.append(txn.mod(consumers.encode(), prefix_range_end(consumers.encode()))
                            < state.revision + 1)
        puts[state.changed_key] = b""
        try:
            client = self._connect()
            revision = await asyncio.wait_for(_write(client, compares, puts, deletes),
                                              CALL_TIMEOUT)
        except _UNREACHABLE as exc:
            raise Unavailable(f"etcd is unavailable: {_reason(exc)}") from None
        if revision is None:
            raise Conflict("the configuration changed meanwhile (on another node?); "
                           "read it again and retry")
        changes = {key: (revision, value) for key, value in puts.items()}
        changes.update((key, (revision, None)) for key in deletes)
        self._update(changes, revision, announce=False)
        return self.conf

    # ------------------------------------------------------------ connection

    def _connect(self) -> aetcd.Client:
        """The client of the current endpoint (gRPC connects on its first call)."""
        if self._client is None:
            host, port = self.endpoints[self._endpoint % len(self.endpoints)]
            self._client = _new_client(host, port)
        return self._client

    async def _disconnect(self) -> None:
        """Drop the client; the next attempt goes to the next endpoint."""
        client, self._client = self._client, None
        self._endpoint += 1
        if client is not None:
            try:
                await client.close()
            except Exception:  # a broken channel may fail to close cleanly; it is gone
                pass

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
        await self._disconnect()

    # ------------------------------------------------------------ local snapshot

    def _save_snapshot(self) -> None:
        data = orjson.dumps({"prefix": self.prefix, "revision": self.revision,
                             "config": self.conf,
                             "revocations": list(self.revocations.entries.values())})
        try:
            replace_file(self.snapshot_path, data)
        except OSError as exc:
            log.error("cannot save the etcd snapshot to %s: %s", self.snapshot_path,
                      exc.strerror or exc)

    def _start_from_snapshot(self, reason: str) -> None:
        path = self.snapshot_path
        try:
            with open(path, "rb") as f:
                saved = orjson.loads(f.read())
            if saved.get("prefix") != self.prefix:
                raise ValueError(f"it holds prefix {saved.get('prefix')!r}")
            conf = schema.validate(saved["config"])
            revision = int(saved["revision"])
            # read with the grace of the configuration they were saved with (keep_for)
            self.revocations.keep_for(conf)
            self.revocations.load(saved.get("revocations", []), path)
        except FileNotFoundError:
            raise StartError(f"FASTGW_ETCD: cannot reach etcd at {self.where} ({reason}) and "
                             f"there is no snapshot at {path} to start from") from None
        except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:  # EntryError too
            raise StartError(f"FASTGW_ETCD: cannot reach etcd at {self.where} ({reason}) and "
                             f"the snapshot {path} is unusable: {_reason(exc)}") from None
        self.state.use_snapshot(conf, revision)
        self._read_everything = True
        log.warning("etcd unreachable at start (%s); serving the snapshot of revision %d "
                    "from %s until it answers", reason, revision, path)


def _new_client(host: str, port: int) -> aetcd.Client:
    return _Client(host, port, timeout=CALL_TIMEOUT, options=GRPC_OPTIONS)


class _Client(aetcd.Client):
    """aetcd's client, whose watches require a leader (etcd's "hasleader" metadata, as Go's
    clientv3.WithRequireLeader): a member cut off from its cluster ends them, so the node
    says it is cut off and tries again, instead of waiting on a watch that never speaks
    (and saying it is connected) for as long as the member has no leader."""

    async def connect(self) -> None:
        await super().connect()
        watcher = self._watcher  # (aetcd passes its metadata to the watch stream only)
        if watcher is not None and ("hasleader", "true") not in (watcher._metadata or ()):
            watcher._metadata = (*(watcher._metadata or ()), ("hasleader", "true"))


async def _write(client: aetcd.Client, compares: list, puts: dict[str, bytes],
                 deletes: list[str]) -> int | None:
    """Puts and deletes in one transaction guarded by `compares`: the revision it made,
    or None when a compare failed; TooLarge when etcd refuses its size."""
    txn = _TRANSACTIONS
    ops = [txn.put(key.encode(), value) for key, value in puts.items()]
    ops += [txn.delete(key.encode()) for key in deletes]
    try:
        succeeded, responses = await client.transaction(compare=compares, success=ops,
                                                        failure=[])
    except ClientError as exc:
        # too many operations (INVALID_ARGUMENT), or more bytes than etcd's gRPC server
        # takes (RESOURCE_EXHAUSTED, which aetcd passes on as a ClientError)
        cause = exc.__cause__
        if not (isinstance(exc, InvalidArgumentError) or isinstance(cause, grpc.aio.AioRpcError)
                and cause.code() == grpc.StatusCode.RESOURCE_EXHAUSTED):
            raise
        raise TooLarge(f"etcd refused the transaction ({_reason(exc)}); etcd's "
                       "--max-txn-ops and --max-request-bytes bound one change") from None
    if not succeeded:
        return None
    response = responses[0]  # any operation's response carries the new revision
    return getattr(response, response.WhichOneof("response")).header.revision


# ---------------------------------------------------------------- push and pull

async def _with_client(endpoints, action):
    """Run `action(client)` against the first endpoint that answers."""
    failure: BaseException | None = None
    for host, port in endpoints:
        client = _new_client(host, port)
        try:
            return await asyncio.wait_for(action(client), CALL_TIMEOUT * 2)
        except _UNREACHABLE as exc:  # refused, silent (deadline exceeded), ...
            failure = exc
        finally:
            try:
                await client.close()
            except Exception:
                pass
    raise Unavailable(f"cannot reach etcd at "
                      f"{','.join(f'{h}:{p}' for h, p in endpoints)}: {_reason(failure)}")


async def push(settings, conf: dict) -> tuple[int, int]:
    """Make the configuration in etcd `conf`, in one transaction: (revision, objects written).
    The transaction fails (Conflict) if anything under the prefix changed meanwhile."""
    state = ClusterState(settings.etcd_prefix)
    root = state.root.encode()
    wanted = state.objects_of(conf)

    async def write(client):
        found = await client.get_prefix(root)
        present = {kv.key.decode(): kv.value for kv in found}
        puts = {key: orjson.dumps(item) for key, item in wanted.items()
                if _decoded(present.get(key)) != item}
        deletes = [key for key in present
                   if key not in wanted and state.section_of(key) is not None]
        if not puts and not deletes:
            return found.header.revision, 0
        puts[state.changed_key] = b""  # (see the module docstring)
        unchanged = _TRANSACTIONS.mod(root, prefix_range_end(root)) < found.header.revision + 1
        revision = await _write(client, [unchanged], puts, deletes)
        if revision is None:
            raise Conflict(f"the configuration under {settings.etcd_prefix} changed "
                           "meanwhile; push again")
        return revision, len(puts) - 1 + len(deletes)  # (objects: not `changed`)

    return await _with_client(settings.etcd, write)


def _decoded(value: bytes | None) -> object:
    """A stored value as JSON; None when absent or not JSON (it gets overwritten)."""
    try:
        return None if value is None else orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


async def pull(settings) -> tuple[dict, int]:
    """The configuration in etcd and how many values were left out of it (objects that do
    not validate are logged and left out)."""
    state = ClusterState(settings.etcd_prefix)

    async def read(client):
        found = await client.get_prefix(state.root.encode())
        revocations = state.root + "revocations/"  # not configuration (revocation_store.py)
        state.update({kv.key.decode(): (kv.mod_revision, kv.value) for kv in found
                      if not kv.key.decode().startswith(revocations)}, found.header.revision)
        return state.conf, state.skipped

    return await _with_client(settings.etcd, read)
