"""A plugin whose access step raises: how the tests provoke an exception on the request path.

Registered only in gateways started with `Gateway(..., plugins=["faulty_plugin"])`
(see tests/plugin_boot/sitecustomize.py); fastgw itself has no switch for it.
"""

from __future__ import annotations

from fastgw.config.types import Obj

NAME = "explode"
PRIORITY = 0
SCHEMA = Obj({})
MESSAGE = "the explode plugin failed on purpose"


def cross_check(conf: dict, usernames: set[str]):
    return ()


class Explode:
    __slots__ = ()

    def access(self, ex):
        raise RuntimeError(MESSAGE)


def build(conf: dict, snapshot) -> Explode:
    return Explode()
