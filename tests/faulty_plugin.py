"""A plugin whose access step raises: how the tests provoke an exception on the request path;
with `at_build: true`, its build raises instead (a configuration that cannot be compiled).

Registered only in gateways started with `Gateway(..., plugins=["faulty_plugin"])`
(see tests/plugin_boot/sitecustomize.py); fastgw itself has no switch for it.
"""

from __future__ import annotations

from fastgw.config.types import Bool, Field, Obj

NAME = "explode"
PRIORITY = 0
SCHEMA = Obj({"at_build": Field(Bool(), default=False)})
MESSAGE = "the explode plugin failed on purpose"
BUILD_MESSAGE = "the explode plugin could not be built, on purpose"


def cross_check(conf: dict, usernames: set[str]):
    return ()


class Explode:
    __slots__ = ()

    def access(self, ex):
        raise RuntimeError(MESSAGE)


def build(conf: dict, snapshot) -> Explode:
    if conf["at_build"]:
        raise RuntimeError(BUILD_MESSAGE)
    return Explode()
