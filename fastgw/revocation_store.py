"""The master's revocation entries (SPEC section 9): the admin API's side, where they are
kept, and how every worker gets them.

`Revocations` owns the live entries by id. A new entry or a lifted one is first persisted
by the store, then sent to every worker over the pipe that carries configurations
(`{"revocations": change, "generation": N}`, change as in `revocation.apply`), and the
admin API answers once every worker has acknowledged it (`{"revocations": N}`). A new
worker gets every entry (`reset`) before its first configuration, so it never serves
without them. Once a second the master forgets the entries that expired and tells the
workers; a worker's check ignores an expired entry anyway, so a worker never pays for
expiry on a request.

Two stores. `FileStore`: the file FASTGW_REVOCATIONS, a change appended to it (and now and
then rewritten whole and atomically), and read again on SIGHUP. `EtcdStore`:
`{prefix}/revocations/{id}`, each key on its own etcd lease that ends at the entry's
`expires`, so etcd deletes it itself; the configuration's watch (config/etcd.py) hands
the keys under that folder to `absorb`, which is how a revocation made on one node reaches
the others, and how a compaction's full read puts them right. While etcd is lost a node
keeps the entries it has (and its etcd snapshot file holds them for a start without etcd).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import os
import time
from collections.abc import Callable

import orjson

from . import revocation
from .config.loader import replace_file
from .config.sources import StartError, Unavailable
from .plugins import longest_leeway
from .revocation import EntryError

log = logging.getLogger("fastgw")

PRUNE_INTERVAL = 1.0  # seconds between the master's sweeps for expired entries
COMPACT_SLACK = 64  # lines appended to the revocations file beyond its live entries
LEASE_MARGIN = 86400  # seconds an etcd entry's lease outlasts it (EtcdStore.write)
# The entries once a change is made, for a store that writes them all (built only then).
Entries = Callable[[], list[dict]]


def _error(status: int, message: str, path: str | None = None) -> tuple[int, dict]:
    """An answer shaped like admin.AdminError's body."""
    body = {"error_msg": message}
    if path:
        body["path"] = path
    return status, body


class Revocations:
    """The live entries of this node, by id (see the module docstring)."""

    def __init__(self, store):
        self.store = store
        store.revocations = self
        self.entries: dict[str, dict] = {}
        self.generation = 0  # counts the changes sent to the workers
        self.master = None
        self._expiry: list[tuple[float, str]] = []  # heap of (expires, id)
        # seconds an entry is kept past its `expires`, usually the token's exp: the longest
        # that a credential of the configuration in force accepts a token past it (keep_for)
        self.keep = 0
        self._lock = asyncio.Lock()  # one change persisted at a time, in order
        self._pruner: asyncio.Task | None = None

    # ------------------------------------------------------------ the master's side

    def attach(self, master) -> None:
        """Called once the master runs: changes from now on go to its workers."""
        self.master = master
        self._pruner = asyncio.get_running_loop().create_task(self._prune_forever())

    def keep_for(self, conf: dict) -> None:
        """The configuration `conf` is in force: entries are kept as long as it needs."""
        self.keep = longest_leeway(conf)

    def send_all(self, worker) -> None:
        """Every entry, to a worker that has none yet (before its first configuration)."""
        worker.revocations_applied = self.generation
        worker.process.stdin.write(orjson.dumps({
            "revocations": {"reset": True, "add": list(self.entries.values())},
            "generation": self.generation}) + b"\n")

    def _change(self, add: list[dict], remove: list[str]) -> int:
        """Change the entries here and send the change to every worker; its generation."""
        for entry_id in remove:
            self.entries.pop(entry_id, None)
        for entry in add:
            self.entries[entry["id"]] = entry
            heapq.heappush(self._expiry, (entry["expires"], entry["id"]))
        if self.master is None:  # still starting: new workers get everything
            return self.generation
        self.generation += 1
        line = orjson.dumps({"revocations": {"add": add, "remove": remove},
                             "generation": self.generation}) + b"\n"
        for worker in self.master.workers.values():
            worker.process.stdin.write(line)
        return self.generation

    async def _in_force(self, generation: int) -> None:
        if self.master is not None and not await self.master.wait_revocations(generation):
            late = self.master.behind(lambda w: w.revocations_applied >= generation)
            log.error("not every worker acknowledged revocation change %d in time: %s",
                      generation, late)

    def load(self, raw_entries, where: str) -> None:
        """Entries read at start (a file, an etcd snapshot); expired ones are dropped and
        bad ones are an error naming them."""
        entries = _parsed(raw_entries, self.keep)
        self._change(entries, [])
        log.info("%d revocation entries from %s", len(entries), where)

    async def reread(self) -> None:
        """SIGHUP: the entries made what the store holds (the file: edited by hand, or put
        there by a deployment); an unusable file leaves the entries in force."""
        async with self._lock:  # never between a change and its write
            try:
                raw_entries = await asyncio.to_thread(self.store.reread)
                if raw_entries is None:  # etcd: its watch keeps them current
                    return
                for raw in raw_entries:  # one written by hand keeps the expiry it was given
                    if not isinstance(raw, dict) or "expires" in raw:
                        continue
                    entry_id = raw.get("id")
                    if isinstance(entry_id, str) and entry_id in self.entries:
                        raw["expires"] = self.entries[entry_id]["expires"]
                entries = {entry["id"]: entry for entry in _parsed(raw_entries, self.keep)}
            except (StartError, EntryError) as exc:
                log.error("revocation entries not re-read from %s, those in force stay: %s",
                          self.store.where, exc)
                return
            add = [entry for entry_id, entry in entries.items()
                   if self.entries.get(entry_id) != entry]
            remove = [entry_id for entry_id in self.entries if entry_id not in entries]
            generation = self._change(add, remove)
        await self._in_force(generation)
        log.info("%d revocation entries re-read from %s (%d new or changed, %d gone)",
                 len(entries), self.store.where, len(add), len(remove))

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_INTERVAL)
            try:
                await self.prune()
            except Exception:
                log.exception("pruning expired revocation entries failed")

    async def prune(self) -> None:
        """Forget the entries whose `expires` has passed, `keep` seconds ago."""
        now, expired = time.time() - self.keep, []
        while self._expiry and self._expiry[0][0] <= now:
            expires, entry_id = heapq.heappop(self._expiry)
            entry = self.entries.get(entry_id)
            if entry is not None and entry["expires"] == expires:
                expired.append(entry_id)
        expired = list(dict.fromkeys(expired))  # once each (a SIGHUP may push one twice)
        if not expired:
            return
        async with self._lock:
            # as they are now: a SIGHUP may have changed or lifted one meanwhile
            now = time.time() - self.keep
            expired = [i for i in expired
                       if i in self.entries and self.entries[i]["expires"] <= now]
            if not expired:
                return
            gone = set(expired)
            try:
                await self.store.forget(
                    expired, lambda: [e for i, e in self.entries.items() if i not in gone])
            except OSError as exc:  # the file keeps them a while longer: they expired anyway
                log.error("cannot write %s: %s", self.store.where, exc.strerror or exc)
            self._change([], expired)

    # ------------------------------------------------------------ changes

    async def revoke(self, data) -> dict:
        """A new entry from an admin API body, in force in every worker on return."""
        now = time.time()
        entry = {"id": revocation.new_id(), **revocation.parse(data, now, self.keep),
                 "created": now}
        async with self._lock:
            await self.store.write(entry, lambda: [*self.entries.values(), entry])
            generation = self._change([entry], [])
        await self._in_force(generation)
        log.info("revocation %s in force (by %s)", entry["id"], "jti" if "jti" in entry
                 else "sub")
        return entry

    async def lift(self, entry_id: str) -> bool:
        """Remove an entry, everywhere; False when there is none with that id."""
        async with self._lock:
            entry = self.entries.get(entry_id)
            if entry is None:
                return False
            await self.store.delete(
                entry, lambda: [e for e in self.entries.values() if e is not entry])
            generation = self._change([], [entry_id])
        await self._in_force(generation)
        log.info("revocation %s lifted", entry_id)
        return True

    def absorb(self, add: list[dict], remove: list[str]) -> None:
        """Changes made elsewhere (another node, through etcd): in force in every worker
        as soon as they acknowledge, without waiting here."""
        if add or remove:
            self._change(add, remove)

    # ------------------------------------------------------------ the admin API

    async def admin(self, method: str, parts: list[str], data) -> tuple[int, object]:
        """/admin/revocations[/{id}]: (status, answer)."""
        try:
            match (method, parts):
                case ("GET", []):  # live ones: the prune may be a second behind
                    now = time.time() - self.keep
                    return 200, [e for e in self.entries.values() if e["expires"] > now]
                case ("POST", []):
                    return 201, await self.revoke(data)
                case ("GET", [entry_id]):
                    entry = self.entries.get(entry_id)
                    return (200, entry) if entry else _error(404, f"no revocation {entry_id!r}")
                case ("DELETE", [entry_id]):
                    if await self.lift(entry_id):
                        return 200, {"deleted": entry_id}
                    return _error(404, f"no revocation {entry_id!r}")
        except EntryError as exc:
            return _error(400, str(exc), exc.path)
        except Unavailable as exc:
            return _error(503, str(exc))
        except OSError as exc:
            log.error("cannot write %s: %s", self.store.where, exc.strerror or exc)
            return _error(503, f"cannot write {self.store.where}: {exc.strerror or exc}")
        if len(parts) > 1:
            return _error(404, "not found")
        return _error(405, "method not allowed")  # /admin/revocations[/{id}] exist


def _parsed(raw_entries, keep: float) -> list[dict]:
    """Entries as stored, validated; those expired `keep` seconds ago dropped; EntryError
    naming a bad one."""
    now = time.time()
    if not isinstance(raw_entries, list):
        raise EntryError("revocations", "must be a list")
    entries = []
    for nth, raw in enumerate(raw_entries):
        try:
            entry = revocation.parse_stored(raw, now, keep)
        except EntryError as exc:
            raise EntryError(f"revocations[{nth}].{exc.path}", exc.message) from None
        if entry is not None:
            entries.append(entry)
    return entries


# ---------------------------------------------------------------- the file

class FileStore:
    """FASTGW_REVOCATIONS: `{"revocations": [entry, ...]}` on its first line, then a line per
    change since, `{"add": entry}` or `{"remove": id}`, appended and fsynced: a change costs
    its own size, not the file's (rewriting 100,000 entries took 76 ms, 18 MB). The file is
    rewritten whole and atomically (temporary file, fsync, rename) by the first change after
    it was read (whoever wrote it, its shape is then fastgw's), once the lines appended
    outnumber the live entries by COMPACT_SLACK, and when it is not the file last written
    (replaced or removed without a SIGHUP: appending would spoil another file). A failed
    append is cut off again; a last line cut short (fastgw stopped while appending it,
    before the change was answered) is left out."""

    def __init__(self, path: str):
        self.path = self.where = path
        self.revocations: Revocations | None = None
        self._appended: int | None = None  # lines after the first; None: rewrite it first
        self._live = 0  # the entries in the file once its changes are made
        self._written: tuple | None = None  # _identity() of the file as fastgw last wrote it
        self._seen = False  # there has been a file since start (read or written)

    def start(self) -> None:
        """Read the file (none yet: no entries); StartError when it cannot be used."""
        try:
            saved = self._read()
            if saved is not None:
                self.revocations.load(saved.get("revocations", []), self.path)
        except EntryError as exc:
            raise StartError(f"FASTGW_REVOCATIONS: {self.path}: {exc}") from None

    def reread(self) -> list:
        """The entries in the file as stored, for SIGHUP. A file gone or without its list
        is an error, never "no entries": revoked tokens are not let in by accident. (A file
        there has never been is no entries, as at start.)"""
        saved = self._read()
        if saved is None:
            if not self._seen:
                return []
            raise StartError(f"FASTGW_REVOCATIONS: there is no {self.path}")
        if "revocations" not in saved:
            raise EntryError("(top level)", "must be an object with a list `revocations`")
        return saved["revocations"]

    def _read(self) -> dict | None:
        """The file as stored, with its changes made (`revocations` then holds the entries
        as they are now); None when there is no file. StartError when it cannot be read,
        EntryError when it is no object."""
        self._appended = None  # the next change rewrites what was read
        try:
            with open(self.path, "rb") as f:
                data = f.read()
            self._seen = True
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StartError(f"FASTGW_REVOCATIONS: cannot read {self.path}: "
                             f"{exc.strerror or exc}") from None
        try:
            saved, changes = orjson.loads(data), b""  # one document (written whole, or by hand)
        except orjson.JSONDecodeError as exc:
            first, _, changes = data.partition(b"\n")
            try:
                saved = orjson.loads(first)
            except orjson.JSONDecodeError:
                raise StartError(f"FASTGW_REVOCATIONS: cannot read {self.path}: {exc}") from None
        if not isinstance(saved, dict):
            raise EntryError("(top level)", "must be an object with a list `revocations`")
        if changes:
            entries = saved.get("revocations", [])
            if not isinstance(entries, list):
                raise EntryError("revocations", "must be a list")
            saved["revocations"] = self._replayed(entries, changes.split(b"\n"),
                                                  data.endswith(b"\n"))
        return saved

    def _replayed(self, entries: list, lines: list[bytes], whole: bool) -> list:
        """`entries` with the changes on `lines` made (the last cut short unless `whole`)."""
        by_id = {}  # id -> entry as stored; anything else is kept for _parsed to name
        others = []
        for raw in entries:
            if isinstance(raw, dict) and isinstance(raw.get("id"), str):
                by_id[raw["id"]] = raw
            else:
                others.append(raw)
        for nth, line in enumerate(lines):
            if not line:
                continue
            try:
                change = orjson.loads(line)
                if "add" in change and isinstance(change["add"], dict):
                    by_id[change["add"].get("id")] = change["add"]
                elif isinstance(change.get("remove"), str):
                    by_id.pop(change["remove"], None)
                else:
                    raise ValueError
            except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
                if not whole and nth == len(lines) - 1:
                    log.warning("%s: its last line, cut short, is left out (fastgw stopped "
                                "while writing a change, which it had not answered)", self.path)
                    break
                raise StartError(f"FASTGW_REVOCATIONS: cannot read {self.path}: line "
                                 f"{nth + 2} is not a change") from None
        return [*others, *by_id.values()]

    async def _save(self, entries: list[dict]) -> None:
        """The file rewritten whole: `entries` on one line."""
        self._appended = None  # until it is written
        data = orjson.dumps({"revocations": entries}) + b"\n"
        await asyncio.to_thread(replace_file, self.path, data)
        self._written, self._appended = _identity(os.stat(self.path)), 0
        self._seen = True
        self._live = len(entries)

    async def _change(self, changes: list[dict], live: int, after: Entries) -> None:
        """Changes appended (`live`: how many entries they add, less those they remove),
        or the file rewritten with `after()`, the entries once they are made: when it is
        due, or when the file is no longer the one last written (replaced or removed
        meanwhile without a SIGHUP). Only a rewrite builds that list (with 100,000
        entries, 0.5 ms a change)."""
        if self._appended is None or self._appended >= self._live + live + COMPACT_SLACK:
            await self._save(after())
            return
        appended, self._appended = self._appended, None  # until they are written
        lines = b"".join(orjson.dumps(change) + b"\n" for change in changes)
        written = await asyncio.to_thread(_append, self.path, lines, self._written)
        if written is None:
            await self._save(after())
            return
        self._written, self._appended = written, appended + len(changes)
        self._live += live

    async def write(self, entry: dict, after: Entries) -> None:
        await self._change([{"add": entry}], 1, after)

    async def delete(self, entry: dict, after: Entries) -> None:
        await self._change([{"remove": entry["id"]}], -1, after)

    async def forget(self, gone: list[str], after: Entries) -> None:
        await self._change([{"remove": entry_id} for entry_id in gone], -len(gone), after)


def _identity(st: os.stat_result) -> tuple:
    """What tells the file fastgw wrote from one put in its place: a file removed and
    written again may get the same inode, and even the same size, not the same mtime."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _append(path: str, lines: bytes, written: tuple) -> tuple | None:
    """`lines` appended to the file at `path` and fsynced, if it is still the one `written`
    describes (_identity); the file's new identity, or None if it is another. A failed
    append is cut off again, so that a change answered with an error never counts."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)  # never created: written whole first
    except FileNotFoundError:
        return None
    try:
        if _identity(os.fstat(fd)) != written:
            return None
        try:
            if os.write(fd, lines) != len(lines):
                raise OSError(f"short write to {path}")
            os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, written[2])
            raise
        return _identity(os.fstat(fd))
    finally:
        os.close(fd)


# ---------------------------------------------------------------- etcd

class EtcdStore:
    """`{prefix}/revocations/{id}` in etcd, each key on a lease ending at `expires`.
    `source` is the configuration's EtcdSource: its client, its watch, its snapshot."""

    def __init__(self, source, root: str):
        self.source = source
        self.folder = root + "revocations/"
        self.where = "etcd " + self.folder
        self.revocations: Revocations | None = None
        self._seen: dict[str, int] = {}  # id -> mod revision of the last change applied

    def key(self, entry_id: str) -> str:
        return self.folder + entry_id

    def owns(self, key: str) -> bool:
        return key.startswith(self.folder)

    async def _call(self, action):
        from .config.etcd import CALL_TIMEOUT, _UNREACHABLE, _reason
        try:
            return await asyncio.wait_for(action(self.source._connect()), CALL_TIMEOUT)
        except _UNREACHABLE as exc:
            raise Unavailable(f"etcd is unavailable: {_reason(exc)}") from None

    async def write(self, entry: dict, after: Entries) -> None:
        # Each node forgets an entry by its own clock and the grace in force then (prune);
        # the lease only clears etcd, LEASE_MARGIN later: a lease ending at `expires` on the
        # writer's clock lifted it on every node while a node with a slower clock, or a
        # grace raised since, still let its token in.
        ttl = max(1, math.ceil(entry["expires"] + self.revocations.keep - time.time())
                  ) + LEASE_MARGIN
        key, value = self.key(entry["id"]).encode(), orjson.dumps(entry)

        async def put(client):
            lease = await client.lease(ttl)
            return await client.put(key, value, lease=lease.id)
        done = await self._call(put)
        self._seen[entry["id"]] = done.header.revision

    async def delete(self, entry: dict, after: Entries) -> None:
        key = self.key(entry["id"]).encode()

        async def delete(client):
            found = await client.get(key)
            gone = await client.delete(key)
            if found is not None and found.lease:
                try:  # the lease held only this key
                    await client.revoke_lease(found.lease)
                except Exception:
                    pass  # it ends at `expires` anyway
            return gone
        gone = await self._call(delete)
        if gone is not None:
            self._seen[entry["id"]] = gone.header.revision

    async def forget(self, gone: list[str], after: Entries) -> None:
        """Expired: etcd's lease deletes the key by itself, LEASE_MARGIN later."""

    def absorb(self, changes: dict[str, tuple[int, bytes | None]], everything: bool) -> bool:
        """Take the keys of the revocations folder out of a batch of etcd changes
        (key -> (mod revision, value or None)) and apply them; with `everything` (a
        full read) an entry absent from the batch is gone. True if any entry changed."""
        now = time.time()
        add, remove, present = [], [], set()
        for key in [key for key in changes if self.owns(key)]:
            mod_revision, value = changes.pop(key)
            entry_id = key[len(self.folder):]
            present.add(entry_id)
            if self._seen.get(entry_id, 0) >= mod_revision:
                continue  # our own write, or an event replayed
            self._seen[entry_id] = mod_revision
            if value is None:
                remove.append(entry_id)
                continue
            try:  # even expired: its lease ends when it may be forgotten, as the prune's
                entry = revocation.parse_stored(orjson.loads(value), now, math.inf)
                if entry["id"] != entry_id:
                    raise EntryError("id", f"{entry['id']!r} differs from the key's")
            except (EntryError, orjson.JSONDecodeError) as exc:
                log.error("etcd key %s skipped: %s", key, exc)
                continue
            add.append(entry)
        if everything:
            remove += [i for i in self.revocations.entries if i not in present]
        remove = [i for i in remove if i in self.revocations.entries]
        self.revocations.absorb(add, remove)
        return bool(add or remove)

    def reread(self) -> None:
        """Nothing to read again: the watch keeps the entries current (absorb)."""
        return None

    def start(self) -> None:
        """Entries come with the configuration's first read (or its snapshot)."""
