"""Where the master's configuration comes from: a file (the default) or etcd.

A source owns the configuration in force (`conf`) and its `revision`. It is read
once by `start()`, written by `commit()` (the admin API), re-read by `reload()`
(SIGHUP), and `follow(on_change)` lets it announce changes made elsewhere (etcd's
watch). The master only puts what the source says into its workers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from . import ConfigError, load_file, loader

log = logging.getLogger("fastgw")

OnChange = Callable[[dict], None]  # called with the new configuration; must not block


class StartError(Exception):
    """The node cannot start from this source; the message says why, in one line."""


class Conflict(Exception):
    """A write lost against a concurrent one (admin API: 409)."""


class Unavailable(Exception):
    """The store cannot be written now (admin API: 503)."""


class TooLarge(Exception):
    """The store refused a change for its size (admin API: 400)."""


class NotInForce(Exception):
    """A change was stored, but the workers could not compile it (admin API: 500)."""


class FileSource:
    """The configuration file: read at start and on SIGHUP, rewritten by the admin API."""

    def __init__(self, path: str):
        self.path = path
        self.conf: dict = {}
        self.revision = 0

    def status(self) -> dict:
        return {"config_source": f"file {self.path}"}

    async def start(self) -> None:
        try:
            self.conf = load_file(self.path)
        except ConfigError as exc:
            raise StartError(f"{self.path}: {exc.first_line()}") from None
        self.revision = 1

    def follow(self, on_change: OnChange) -> None:
        """A file changes only through SIGHUP or the admin API: nothing to watch."""

    async def commit(self, conf: dict) -> dict:
        try:
            await asyncio.to_thread(loader.write_atomically, self.path, conf)
        except OSError as exc:  # nothing changed: the file and the configuration in force
            log.error("cannot write %s: %s", self.path, exc.strerror or exc)
            raise Unavailable(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self.conf, self.revision = conf, self.revision + 1
        return conf

    def keep(self, conf: dict) -> None:
        """The workers could not compile what `reload` read: `conf` stays the one in force
        (the file still holds the other, for the next SIGHUP)."""
        self.conf = conf

    async def reload(self) -> dict | None:
        """Re-read the file; None (and the running configuration kept) when it is bad."""
        try:
            conf = load_file(self.path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s: %s",
                      self.path, exc.first_line())
            return None
        self.conf, self.revision = conf, self.revision + 1
        return conf

    async def close(self) -> None:
        pass
