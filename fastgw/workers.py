"""Running the gateway: the serving process, its signals and its configuration source."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import uvloop

from .config import ConfigError, load_file
from .config.compile import Snapshot
from .plugins.jwt_auth import VerifiedTokenCache
from .server import Gateway
from .settings import Settings

log = logging.getLogger("fastgw")


def serve(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; 0 after a clean drain, 2 when it cannot start."""
    try:
        conf = load_file(settings.config)
    except ConfigError as exc:
        print(f"fastgw: {settings.config}: {exc.first_line()}", file=sys.stderr)
        return 2
    try:
        return uvloop.run(_serve(settings, conf))
    except OSError as exc:
        print(f"fastgw: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 2


def snapshot_factory(settings: Settings):
    cache = VerifiedTokenCache(settings.jwt_cache_size)

    def build(conf, revision, pools, previous):
        return Snapshot(conf, revision, pools, cache, previous)
    return build


async def _serve(settings: Settings, conf: dict) -> int:
    loop = asyncio.get_running_loop()
    gateway = Gateway(settings, snapshot_factory(settings))
    gateway.apply(conf, 1)
    await gateway.start()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _reload(gateway))
    addresses = ", ".join(f"{h}:{p}" for h, p in settings.listen)
    log.info("fastgw serving on %s (configuration %s)", addresses, settings.config)
    await stop.wait()
    log.info("fastgw stopping: draining in-flight requests")
    await gateway.shutdown(settings.shutdown_timeout)
    return 0


def _reload(gateway: Gateway) -> None:
    """SIGHUP: re-read the file; a bad one leaves the running configuration in force."""
    path = gateway.settings.config
    try:
        conf = load_file(path)
    except ConfigError as exc:
        log.error("reload refused, keeping the running configuration: %s: %s",
                  path, exc.first_line())
        return
    snapshot = gateway.apply(conf, gateway.snapshot.revision + 1)
    log.info("configuration reloaded from %s (revision %d)", path, snapshot.revision)
