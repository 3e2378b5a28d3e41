"""A plugin whose access step waits: how the tests exercise the PENDING half of the contract.

`access` returns PENDING and resumes the exchange 50 ms later from the event loop, as a
plugin waiting for a key fetch would: with None (go on, after adding an upstream header),
or with a 403 when its configuration says `refuse: true`. Registered like faulty_plugin.
"""

from __future__ import annotations

import asyncio

from fastgw.config.types import Bool, Field, Obj
from fastgw.plugins import PENDING
from fastgw.responses import error

NAME = "later"
PRIORITY = 3000  # before jwt-auth
SCHEMA = Obj({"refuse": Field(Bool(), default=False)})
HEADER = b"x-waited: yes\r\n"
REFUSED = error(403, "refused after waiting")
DELAY = 0.05


def cross_check(conf: dict, usernames: set[str]):
    return ()


class Later:
    __slots__ = ("answer",)

    def __init__(self, conf: dict):
        self.answer = REFUSED if conf["refuse"] else None

    def access(self, ex):
        asyncio.get_running_loop().call_later(DELAY, self._done, ex)
        return PENDING

    def _done(self, ex) -> None:
        if self.answer is None:
            ex.add_header(HEADER)
        ex.resume(self.answer)


def build(conf: dict, snapshot) -> Later:
    return Later(conf)
