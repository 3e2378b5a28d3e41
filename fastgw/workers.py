"""The master and its workers.

The master binds the listening sockets, owns the configuration (loads, validates,
reloads on SIGHUP, serves the admin API) and supervises the workers; it never
proxies. Workers are fresh interpreters (`python -m fastgw.workers`) that inherit
the listening sockets and all accept from the same queues, so a worker that dies
takes only its own connections with it and none of the others' or of the backlog
(SO_REUSEPORT would give each worker its own queue, lost with it). A dead worker is
replaced at once.

Master and worker talk over the worker's stdin and stdout, one JSON object a line:
master -> worker `{"revision": N, "config": {...}}`, and with HTTPS listeners
`{"tls": {...}, "generation": N}` (the certificate pair, before the first configuration
and after each SIGHUP that brought a good one), and `{"jwks": URL, "keys": [...] | null,
"generation": N, "cooldown": S}` (a key set's keys, after each fetch: see jwks.py);
worker -> master `{"ready": N}` once serving, `{"applied": N}` after each later
configuration (`{"applied": N, "failed": true}` if it could not compile it: it keeps the one
it had), `{"tls": N}` after each later pair, and `{"jwks_refetch": URL}` (a token's
kid is not in that set). The master reports a change as in force only when every worker
has applied it, or when the others have not a second after one has (LAGGARD_GRACE: a
worker stopped or too busy to read its pipe takes it when it reads again).
Revocation entries travel the same way (revocation_store.py): `{"revocations": {...},
"generation": N}`, every entry before a worker's first configuration and each change
after, acknowledged with `{"revocations": N}`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
import os
import resource
import signal
import socket
import sys
from typing import TYPE_CHECKING

import orjson
import uvloop
from prometheus_client import CONTENT_TYPE_LATEST

from . import keysets, revocation, tls
from .access_log import AccessLog
from .admin import AdminAPI
from .config import gc_paused
from .config.compile import Snapshot
from .config.sources import FileSource, NotInForce, StartError
from .console import Console
from .control_http import ControlProtocol
from .jwks import KeySetFetchers
from .metrics import merge, render
from .plugins import new_states
from .revocation_store import FileStore, Revocations
from .settings import Settings

if TYPE_CHECKING:
    from .config.etcd import EtcdSource

log = logging.getLogger("fastgw")

APPLY_TIMEOUT = 5.0  # seconds for every worker to acknowledge a configuration
# ... and the seconds the others get once one has (_wait_workers): SPEC 6 has a change in
# force in every worker within one second
LAGGARD_GRACE = 1.0
# A worker that exits before it is ready is started again after a pause that doubles each
# time in a row, up to RESPAWN_MAX (it cannot start: a log file gone, memory short, ...).
RESPAWN_FIRST = 0.2
RESPAWN_MAX = 10.0
COMPILE_FAILED = 3  # a worker's exit status when it cannot compile its first configuration
# What the master handles; blocked from the start of the process (cli) until it does.
MASTER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)


def serve(settings: Settings) -> int:
    """Run the master until SIGTERM/SIGINT; 0 after a clean drain, 2 when it cannot start."""
    _raise_file_limit()
    return uvloop.run(_serve(settings))


def _raise_file_limit() -> None:
    """Every proxied connection takes two descriptors (client and upstream): the soft
    limit, often 1,024, is raised to the hard one, for the master and the workers it
    starts, as HAProxy and nginx do."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard  # the kernel's usual cap
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass  # the limit stays as it was; nothing else depends on it


async def _serve(settings: Settings) -> int:
    if settings.etcd:
        from .config.etcd import EtcdSource  # gRPC is loaded only in cluster mode
        source = EtcdSource(settings)
    else:
        source = FileSource(settings.config)
    # etcd mode: the entries are under the prefix, read with the configuration
    revocations = (source.revocations if settings.etcd
                   else Revocations(FileStore(settings.revocations)))
    try:
        await source.start()
        revocations.keep_for(source.conf)  # how long expired entries read now still count
        revocations.store.start()
        gc.freeze()  # the configuration loaded at start lives long: out of every collection
        if settings.access_log not in ("off", "stdout"):
            try:
                os.close(os.open(settings.access_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                                 0o640))
            except OSError as exc:
                raise StartError(f"FASTGW_ACCESS_LOG: cannot open {settings.access_log}: "
                                 f"{exc.strerror}") from None
        pair = None
        if settings.tls_listen:
            try:
                pair = tls.read_pair(settings.tls_cert, settings.tls_key)
            except tls.PairError as exc:
                raise StartError(str(exc)) from None
        sockets = [_listen("FASTGW_LISTEN", *address) for address in settings.listen]
        tls_sockets = [_listen("FASTGW_TLS_LISTEN", *address)
                       for address in settings.tls_listen or ()]
        admin = (_listen("FASTGW_ADMIN_LISTEN", *settings.admin_listen) if settings.admin_key
                 else None)
        metrics = (_listen("FASTGW_METRICS_LISTEN", *settings.metrics_listen)
                   if settings.metrics_listen else None)
    except StartError as exc:
        await source.close()
        print(f"fastgw: {exc}", file=sys.stderr)
        return 2
    try:
        return await Master(settings, source, sockets, admin, metrics, tls_sockets,
                            pair, revocations).run()
    finally:
        await source.close()


def _listen(setting: str, host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=4096)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise StartError(f"{setting}: cannot listen on {_address(host, port)}: {reason}"
                         ) from None
    sock.set_inheritable(True)
    return sock


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_METRICS_NOT_FOUND = (404, b"application/json", b'{"error_msg": "404 Not Found"}')
_METRICS_NOT_ALLOWED = (405, b"application/json", b'{"error_msg": "method not allowed"}',
                        b"allow: GET, HEAD\r\n")


def _metrics_admit(method: str, target: str, headers: dict):
    """The metrics listener's answer at a request's head, before any body (they take
    none): 404 for a path it does not have, 405 (RFC 9110 15.5.6) for a method other than
    GET and HEAD on /metrics and /healthz; None for the handler to answer."""
    path = target.split("?", 1)[0]
    if path != "/metrics" and path != "/healthz":
        return _METRICS_NOT_FOUND
    if method != "GET" and method != "HEAD":
        return _METRICS_NOT_ALLOWED
    return None


def _bound(sock: socket.socket) -> str:
    """Where a listening socket listens: its port when port 0 was asked for."""
    return _address(*sock.getsockname()[:2])


class WorkerHandle:
    """The master's side of one worker process."""

    def __init__(self, slot: int, process: asyncio.subprocess.Process, on_refetch=None):
        self.slot = slot
        self.process = process
        self.on_refetch = on_refetch  # (url, this handle): the worker asks for a key set
        self.applied = 0
        self.tls_applied = 0  # the generation of the certificate pair it serves
        self.changed = asyncio.Event()  # set whenever `applied` or `tls_applied` moves
        self.revocations_applied = 0  # the generation of revocation entries it holds
        self.failed = 0  # the last revision it could not compile (it kept the one it had)
        self.stats_waiters: list[asyncio.Future] = []
        self.last_stats: dict | None = None  # what it counted when last asked (stats)

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, revision: int, conf: dict) -> None:
        self.process.stdin.write(orjson.dumps({"revision": revision, "config": conf}) + b"\n")

    def send_message(self, message: dict) -> None:
        self.process.stdin.write(orjson.dumps(message) + b"\n")

    def send_tls(self, generation: int, pair: tls.CertificatePair) -> None:
        self.process.stdin.write(orjson.dumps({"tls": pair.to_message(),
                                               "generation": generation}) + b"\n")

    async def stats(self) -> dict:
        """The worker's counters (metrics.WorkerStats.snapshot)."""
        waiter = asyncio.get_running_loop().create_future()
        self.stats_waiters.append(waiter)
        self.process.stdin.write(b'{"stats": true}\n')
        return await waiter

    async def read_reports(self) -> None:
        while line := await self.process.stdout.readline():
            report = orjson.loads(line)
            if "stats" in report:
                self.last_stats = report["stats"]
                if self.stats_waiters:  # in the order asked; one given up on is done
                    waiter = self.stats_waiters.pop(0)
                    if not waiter.done():
                        waiter.set_result(report["stats"])
                continue
            if "jwks_refetch" in report:
                if self.on_refetch is not None:
                    self.on_refetch(report["jwks_refetch"], self)
                continue
            if "revocations" in report:
                self.revocations_applied = report["revocations"]
                self.changed.set()
                continue
            if "tls" in report:
                self.tls_applied = report["tls"]
            if "failed" in report:
                self.failed = report["applied"]
            self.applied = report.get("ready") or report.get("applied") or self.applied
            self.changed.set()
        self.changed.set()  # gone: whoever waits for it looks at its slot again
        for waiter in self.stats_waiters:
            waiter.cancel()


class Master:
    def __init__(self, settings: Settings, source: "FileSource | EtcdSource",
                 sockets: list[socket.socket], admin_socket: socket.socket | None = None,
                 metrics_socket: socket.socket | None = None,
                 tls_sockets: list[socket.socket] = (),
                 tls_pair: tls.CertificatePair | None = None,
                 revocations: Revocations | None = None):
        self.settings = settings
        # revocation entries (revocation_store.py); none given: none yet, kept in the file
        self.revocations = revocations or Revocations(FileStore(settings.revocations))
        self.source = source
        self.admin_socket = admin_socket
        self.metrics_socket = metrics_socket
        self.revision = 1  # counts what was sent to the workers (they acknowledge it)
        # what every worker compiled last, and so what a new worker gets: (revision, conf)
        self.in_force: tuple[int, dict] = (1, source.conf)
        self.revocations.keep_for(source.conf)
        self.sockets = sockets
        self.tls_sockets = list(tls_sockets)
        self.tls_pair = tls_pair  # the pair in force: what every worker, new ones too, gets
        self.tls_generation = 1
        self.workers: dict[int, WorkerHandle] = {}
        self.restarts = 0
        self.spawning = 0  # workers being started (their process not yet in `workers`)
        self.early_exits: dict[int, int] = {}  # slot -> workers in a row gone before ready
        self.served = False  # a worker has been ready (one replaced it since, maybe)
        self.pausing: set[int] = set()  # slots waiting to start a worker again (RESPAWN_*)
        # the counters of workers gone, as each last reported them: /metrics adds them, so
        # that counters only go up (requests counted after its last report are lost)
        self.departed: dict | None = None
        self._spawned = asyncio.Event()  # set whenever one is
        self.stopping = False
        self.exit_code = 0
        self._pending: tuple[int, dict] | None = None  # a revision being put in force
        self._stop = asyncio.Event()
        self._change_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()  # held until done (the loop keeps weak refs)
        # key sets are fetched here, once for the node, and sent to every worker
        self.jwks = KeySetFetchers(self._send_jwks)

    def _send_jwks(self, message: dict, worker: "WorkerHandle | None") -> None:
        for handle in self.workers.values() if worker is None else (worker,):
            if handle.process.returncode is None:
                handle.send_message(message)

    @property
    def conf(self) -> dict:
        """The configuration in force (the admin API reads and edits this)."""
        return self.source.conf

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._background(self.reload()))
        loop.add_signal_handler(signal.SIGUSR1, self._reopen_logs)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, MASTER_SIGNALS)  # one pending comes now
        self.jwks.configure(self.conf)  # fetched in the background: never a start-up failure
        self.revocations.attach(self)
        started = loop.time()
        await asyncio.gather(*(self._spawn(slot) for slot in range(self.settings.workers)))
        await self.wait_applied(self.revision, grace=None)  # all of them, unless slow
        if self._stop.is_set():  # a signal, or a first configuration that cannot be compiled
            return await self._stop_workers()
        self.source.follow(self.config_changed)
        if self.admin_socket is not None:
            api = Console(AdminAPI(self))  # the web console at /ui/, the API beside it
            await loop.create_server(lambda: ControlProtocol(api.http, self.settings, api.admit),
                                     sock=self.admin_socket)
            log.info("admin API on %s", _bound(self.admin_socket))
        if self.metrics_socket is not None:
            # (no request to these endpoints has a body)
            await loop.create_server(lambda: ControlProtocol(self.metrics_http, self.settings,
                                                             _metrics_admit, max_body=0),
                                     sock=self.metrics_socket)
            log.info("metrics on %s", _bound(self.metrics_socket))
        addresses = ", ".join([*map(_bound, self.sockets),
                               *(f"https://{_bound(s)}" for s in self.tls_sockets)])
        if self.tls_pair is not None:
            log.info("TLS certificate %s", self.tls_pair.summary)
        if not self._ready_workers():  # none within APPLY_TIMEOUT: slow, or starting again
            log.warning("no worker is ready after %.1f s (%d starting); fastgw serves on %s "
                        "once one is", loop.time() - started, len(self.workers), addresses)
            await self._first_ready()
        if not self._stop.is_set():
            ready = self._ready_workers()
            log.info("fastgw serving on %s with %s (configuration from %s)", addresses,
                     f"{ready} workers" if ready == len(self.workers) else
                     f"{ready} of {len(self.workers)} workers ready, the others starting",
                     self.source.status()["config_source"])
            await self._stop.wait()
        log.info("fastgw stopping: draining in-flight requests")
        return await self._stop_workers()

    def _ready_workers(self) -> int:
        """How many workers serve: each has said it is ready and is running."""
        return sum(1 for w in self.workers.values() if w.applied and w.process.returncode is None)

    async def _first_ready(self) -> None:
        """Until a worker serves, or fastgw stops first."""
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            while not self._stop.is_set():
                for worker in self.workers.values():  # (before the count: no report missed)
                    worker.changed.clear()
                if self._ready_workers():
                    return
                changes = [asyncio.ensure_future(w.changed.wait())
                           for w in self.workers.values()]
                try:
                    await asyncio.wait([stop, *changes], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for change in changes:
                        change.cancel()
        finally:
            stop.cancel()

    async def _stop_workers(self) -> int:
        self.stopping = True
        self.jwks.close()
        # a replacement being started as the stop comes is stopped too, once it is
        while self.spawning or any(w.process.returncode is None for w in self.workers.values()):
            if self.spawning:
                self._spawned.clear()
                await self._spawned.wait()
            # the master's copies of the listening sockets: closed as the workers close
            # theirs, new connections are refused at once instead of queued for nobody
            for sock in (*self.sockets, *self.tls_sockets):
                sock.close()
            running = [w.process for w in self.workers.values() if w.process.returncode is None]
            for process in running:
                process.send_signal(signal.SIGTERM)
            await asyncio.gather(*(process.wait() for process in running))
        return self.exit_code

    # ------------------------------------------------------------ workers

    def _reopen_logs(self) -> None:
        """SIGUSR1: every worker reopens its access log (after a rotation). One still
        starting opens it after this anyway, and ignores the signal until then."""
        for worker in self.workers.values():
            if worker.applied and worker.process.returncode is None:
                worker.process.send_signal(signal.SIGUSR1)

    async def _spawn(self, slot: int) -> None:
        self.spawning += 1
        try:
            await self._start_worker(slot)
        finally:
            self.spawning -= 1
            self._spawned.set()

    async def _start_worker(self, slot: int) -> None:
        fds = [s.fileno() for s in self.sockets]
        tls_fds = [s.fileno() for s in self.tls_sockets]
        log_fd = os.dup(sys.stdout.fileno())  # the access log's "stdout" is the master's
        env = {**os.environ, "FASTGW_WORKER_FDS": ",".join(map(str, fds)),
               "FASTGW_WORKER_TLS_FDS": ",".join(map(str, tls_fds)),
               "FASTGW_WORKER_STDOUT_FD": str(log_fd),
               "FASTGW_WORKER_SETTINGS": json.dumps(dataclasses.asdict(self.settings))}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fastgw.workers", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, pass_fds=[*fds, *tls_fds, log_fd], env=env)
        os.close(log_fd)
        old = self.workers.get(slot)
        worker = self.workers[slot] = WorkerHandle(slot, process, self.jwks.requested)
        if old is not None:
            old.changed.set()  # whoever waited for the old one waits for this one
        if self.tls_pair is not None:
            worker.send_tls(self.tls_generation, self.tls_pair)
            worker.tls_applied = self.tls_generation  # its `ready` will say so
        self.revocations.send_all(worker)
        worker.send(*self.in_force)
        if self._pending is not None:  # and what is being put in force, as a change
            worker.send(*self._pending)
        for message in self.jwks.messages():  # the keys fetched so far
            worker.send_message(message)
        self._background(self._supervise(worker))

    async def _supervise(self, worker: WorkerHandle) -> None:
        await worker.read_reports()
        code = await worker.process.wait()
        if worker.last_stats is not None:
            self.departed = merge([worker.last_stats, *filter(None, [self.departed])])
        if self.stopping:
            return
        if worker.applied:
            self.served = True
        if code == COMPILE_FAILED and not self.served and not any(
                w.applied for w in self.workers.values()):
            # no worker ever compiled a configuration: the one fastgw started on is at fault
            print("fastgw: the configuration could not be compiled: a fault of fastgw's or "
                  "of a plugin's (the worker's traceback is above)", file=sys.stderr)
            self.exit_code = 2
            self._stop.set()
            for other in self.workers.values():
                other.changed.set()  # their waiters see the stop
            return
        self.restarts += 1
        slot = worker.slot
        if worker.applied:  # it served: started again at once
            self.early_exits.pop(slot, None)
            log.warning("worker %d (pid %d) exited with status %s; starting a new one",
                        slot, worker.pid, code)
            await self._spawn(slot)
            return
        early = self.early_exits[slot] = self.early_exits.get(slot, 0) + 1
        pause = 0.0 if early == 1 else min(RESPAWN_MAX, RESPAWN_FIRST * 2 ** (early - 2))
        log.warning("worker %d (pid %d) exited with status %s before it was ready; starting "
                    "a new one in %.1f s", slot, worker.pid, code, pause)
        if pause:
            self.pausing.add(slot)
            worker.changed.set()  # a change waiting for this slot need not (_wait_workers)
            try:
                await asyncio.wait_for(self._stop.wait(), pause)
                return  # stopping
            except asyncio.TimeoutError:
                pass
            finally:
                self.pausing.discard(slot)
        if not self.stopping:
            await self._spawn(slot)

    async def wait_applied(self, revision: int, timeout: float = APPLY_TIMEOUT,
                           grace: float | None = LAGGARD_GRACE) -> bool:
        """True once every worker runs configuration `revision` (or a later one)."""
        return await self._wait_workers(lambda worker: worker.applied >= revision, timeout,
                                        grace)

    async def wait_revocations(self, generation: int) -> bool:
        """True once every worker holds revocation change `generation` (or a later one)."""
        return await self._wait_workers(lambda w: w.revocations_applied >= generation)

    async def _wait_workers(self, done, timeout: float = APPLY_TIMEOUT,
                            grace: float | None = LAGGARD_GRACE) -> bool:
        """True once `done(worker)` holds for the worker in every slot (re-asked as each
        reports, and for a worker that replaced one that died meanwhile); False after
        `timeout`, or `grace` after it first held for one, or when fastgw stops. A
        slot pausing before it starts a worker again is done: that worker starts with what
        is in force then.

        The grace: a worker stopped (SIGSTOP, a debugger) or too busy to read its pipe
        would otherwise hold every answer for `timeout`, though it cannot serve meanwhile
        and takes the change when it reads again; those that answered have shown that the
        change compiles. (Workers that all take long, a large configuration, are waited
        for: the grace starts with the first acknowledgement.)"""
        first = asyncio.Event()

        async def one(slot: int) -> None:
            while not self._stop.is_set():
                worker = self.workers[slot]
                if done(worker):
                    first.set()
                    return
                if slot in self.pausing:
                    return
                worker.changed.clear()
                await worker.changed.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        every = asyncio.ensure_future(asyncio.gather(*map(one, list(self.workers))))
        one_done = asyncio.ensure_future(first.wait())
        try:
            await asyncio.wait([every] if grace is None else [every, one_done],
                               timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if grace is not None and not every.done() and one_done.done():
                await asyncio.wait([every], timeout=max(0.0, min(grace,
                                                                 deadline - loop.time())))
            return every.done() and not self._stop.is_set()
        finally:
            every.cancel()
            one_done.cancel()

    def workers_behind(self) -> list[int]:
        """The workers not (yet) running the configuration in force or holding every
        revocation change: stopped, busy, or starting (GET /admin/status)."""
        revision, generation = self.in_force[0], self.revocations.generation
        return [w.pid for w in self.workers.values() if w.process.returncode is None and (
            w.applied < revision or w.revocations_applied < generation)]

    def behind(self, done) -> str:
        """The workers for which `done(worker)` does not hold, for the log."""
        late = [f"worker {w.slot} (pid {w.pid})" for w in self.workers.values()
                if not done(w) and w.slot not in self.pausing]
        return ", ".join(late) or "none now"

    # ------------------------------------------------------------ configuration

    async def apply(self, conf: dict) -> bool:
        """Put a validated configuration in force in every worker. False (and logged) if
        a worker could not compile it: a fault of fastgw's or of a plugin's, whose
        traceback the worker logged; every worker then keeps the configuration in force."""
        async with self._change_lock:
            self.revision += 1
            revision = self.revision
            # key sets of both, meanwhile: a fast worker may meet a new key set's token
            self.jwks.configure(conf, also=self.in_force[1])
            self._pending = (revision, conf)  # a worker started meanwhile gets it too
            try:
                for worker in self.workers.values():
                    worker.send(revision, conf)
                if not await self.wait_applied(revision):
                    log.error("not every worker acknowledged revision %d in time: %s (it "
                              "reaches them when they read their pipe again)", revision,
                              self.behind(lambda w: w.applied >= revision))
            finally:
                self._pending = None
            failed = [w for w in self.workers.values() if w.failed == revision]
            if not failed:
                self.in_force = (revision, conf)
                self.jwks.configure(conf)
                self.revocations.keep_for(conf)
                return True
            log.error("revision %d is not in force: %d of %d workers could not compile it "
                      "(their log says why); revision %d stays", revision, len(failed),
                      len(self.workers), self.in_force[0])
            self.jwks.configure(self.in_force[1])
            if len(failed) < len(self.workers):  # the others go back to it too
                self.revision += 1
                for worker in self.workers.values():
                    worker.send(self.revision, self.in_force[1])
                await self.wait_applied(self.revision)
            return False

    def config_changed(self, conf: dict) -> None:
        """The source changed on its own (etcd): put it in force, changes in order."""
        self._background(self.apply(conf))

    def _background(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def commit(self, conf: dict) -> dict:
        """An admin change: persist it in the source, then put it in force everywhere.
        NotInForce if it could not be (see apply): what the admin API reads and edits is
        then the configuration in force (file mode: `keep`), and a start on what was
        stored stops with the compile error."""
        conf = await self.source.commit(conf)
        if not await self.apply(conf):
            self.source.keep(self.in_force[1])
            raise NotInForce("the workers could not compile this configuration (a fault of "
                             "fastgw's or of a plugin's; the log says why): it is stored, "
                             "and the configuration in force stays")
        return conf

    async def metrics_http(self, method: str, target: str, headers: dict, body: bytes):
        """GET /metrics (summed over every worker) and GET /healthz; HEAD as GET (the
        head only: control_http), as load balancers' checks often send it."""
        path = target.split("?", 1)[0]  # (_metrics_admit has answered any other request)
        if path == "/healthz":
            if self.stopping:
                return 503, b"application/json", b'{"status": "stopping"}'
            serving = any(w.applied and w.process.returncode is None
                          for w in self.workers.values())
            return ((200, b"application/json", b'{"status": "ok"}') if serving else
                    (503, b"application/json", b'{"status": "no worker is serving"}'))
        # (a worker gone, whose replacement is starting, has no counters to give)
        alive = [w for w in self.workers.values() if not w.process.stdin.is_closing()]
        try:
            snapshots = await asyncio.wait_for(asyncio.gather(*(w.stats() for w in alive)),
                                               APPLY_TIMEOUT)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            return 503, b"application/json", b'{"error_msg": "workers did not answer"}'
        if self.departed is not None:
            snapshots.append(self.departed)
        text = render(snapshots, self.source.revision, self.restarts, len(self.workers),
                      self.jwks.metrics(), len(self.revocations.entries))
        return 200, CONTENT_TYPE_LATEST.encode(), text

    async def reload(self) -> None:
        """SIGHUP: read the source again; a bad file leaves the running configuration. The
        revocations file and the certificate pair are read again too."""
        if self.tls_pair is not None:
            await self.reload_tls()
        try:
            await self.revocations.reread()
        except Exception:  # a fault of fastgw's: the configuration is read all the same
            log.exception("re-reading the revocation entries failed")
        conf = await self.source.reload()
        if conf is None:
            return
        if not await self.apply(conf):
            self.source.keep(self.in_force[1])  # what the admin API reads and edits
            return
        log.info("configuration reloaded from %s (revision %d)",
                 self.source.status()["config_source"], self.source.revision)

    async def reload_tls(self) -> None:
        """Re-read the certificate pair: checked here first, then every worker serves it
        to new handshakes; a bad pair leaves the one in force."""
        try:
            pair = tls.read_pair(self.settings.tls_cert, self.settings.tls_key)
        except tls.PairError as exc:
            log.error("TLS reload refused, keeping the certificate in force: %s", exc)
            return
        self.tls_pair = pair
        self.tls_generation += 1
        generation = self.tls_generation
        for worker in self.workers.values():
            worker.send_tls(generation, pair)
        if await self._wait_workers(lambda worker: worker.tls_applied >= generation):
            log.info("TLS certificate reloaded: %s", pair.summary)
        else:
            log.error("not every worker acknowledged TLS certificate %d in time: %s",
                      generation, self.behind(lambda worker: worker.tls_applied >= generation))


# ---------------------------------------------------------------- the worker process

def snapshot_factory(settings: Settings):
    state = new_states(settings)  # the plugins' own, kept across configurations

    def build(conf, revision, pools, previous):
        return Snapshot(conf, revision, pools, state, previous)
    return build


def _report(**message) -> None:
    sys.stdout.buffer.write(orjson.dumps(message) + b"\n")
    sys.stdout.buffer.flush()


async def _worker(settings: Settings, fds: list[int], tls_fds: list[int]) -> int:
    from .server import Gateway
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 30)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    line = await reader.readline()
    terminator = None
    if tls_fds:  # the certificate pair in force comes before the first configuration
        message = orjson.loads(line)
        terminator = tls.TLSTerminator(tls.CertificatePair.from_message(message["tls"]),
                                       settings.header_timeout)
        line = await reader.readline()
    with gc_paused():
        first = orjson.loads(line)
        while "revocations" in first:  # every entry, before the first configuration
            revocation.apply(first["revocations"])
            first = orjson.loads(await reader.readline())
    access_log = None
    if settings.access_log != "off":
        access_log = AccessLog(settings.access_log, int(os.environ["FASTGW_WORKER_STDOUT_FD"]))
    loop.add_signal_handler(signal.SIGUSR1, access_log.reopen if access_log else lambda: None)
    gateway = Gateway(settings, snapshot_factory(settings), access_log)
    keysets.ask = lambda url: _report(jwks_refetch=url)  # a kid its key sets lack
    with gc_paused():
        try:
            gateway.apply(first["config"], first["revision"])
        except Exception:  # the master gives up if this is the configuration it started on
            log.exception("revision %d could not be compiled", first["revision"])
            return COMPILE_FAILED
    gc.freeze()  # the first configuration lives long: keep it out of every collection
    await gateway.start([socket.socket(fileno=fd) for fd in fds],
                        [socket.socket(fileno=fd) for fd in tls_fds], terminator)
    _report(ready=first["revision"])

    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    for sig in (signal.SIGINT, signal.SIGHUP):  # the master decides; a terminal's ^C reaches
        loop.add_signal_handler(sig, lambda: None)  # the whole process group

    async def follow_master() -> None:
        while line := await reader.readline():
            failed = False
            with gc_paused():
                message = orjson.loads(line)
                if "config" in message:
                    try:
                        gateway.apply(message["config"], message["revision"])
                    except Exception:  # a fault of fastgw's or a plugin's, not the user's
                        failed = True
                        log.exception("revision %d could not be compiled; revision %d stays "
                                      "in force", message["revision"], gateway.snapshot.revision)
            if "revocations" in message:
                revocation.apply(message["revocations"])
                _report(revocations=message["generation"])
            elif "stats" in message:
                _report(stats=gateway.stats.snapshot(gateway))
            elif "jwks" in message:
                keysets.received(message)
            elif "tls" in message:
                if terminator.replace(tls.CertificatePair.from_message(message["tls"])):
                    _report(tls=message["generation"])
            elif failed:
                _report(applied=message["revision"], failed=True)
            else:
                _report(applied=message["revision"])
        stop.set()  # the master is gone

    follower = loop.create_task(follow_master())
    await stop.wait()
    follower.cancel()
    await gateway.shutdown(settings.shutdown_timeout)
    return 0


def worker_main() -> int:
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # its default ends the process (_worker)
    raw = json.loads(os.environ["FASTGW_WORKER_SETTINGS"])
    for key in ("listen", "etcd", "tls_listen"):
        if raw[key] is not None:
            raw[key] = tuple(tuple(a) for a in raw[key])
    for key in ("admin_listen", "metrics_listen"):
        if raw[key] is not None:
            raw[key] = tuple(raw[key])
    settings = Settings(**raw)
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s [worker %(process)d] %(message)s")
    fds = [int(fd) for fd in os.environ["FASTGW_WORKER_FDS"].split(",")]
    tls_fds = [int(fd) for fd in os.environ["FASTGW_WORKER_TLS_FDS"].split(",") if fd]
    return uvloop.run(_worker(settings, fds, tls_fds))


if __name__ == "__main__":
    raise SystemExit(worker_main())
