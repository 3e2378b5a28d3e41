"""A plugin whose access step raises: how the tests provoke an exception on the request path;
with `at_build: true`, its build raises instead (a configuration that cannot be compiled);
with `at_build_if: PATH`, its build raises while PATH exists (a worker that cannot start);
with `build_delay: SECONDS`, its build takes that long first (a worker slow to start).

Registered only in gateways started with `Gateway(..., plugins=["faulty_plugin"])`
(see tests/plugin_boot/sitecustomize.py); fastgw itself has no switch for it.
"""

from __future__ import annotations

import os
import time

from fastgw.config.types import Bool, Field, Num, Obj, Str

NAME = "explode"
PRIORITY = 0
SCHEMA = Obj({"at_build": Field(Bool(), default=False), "at_build_if": Field(Str()),
              "build_delay": Field(Num(min=0), default=0)})
MESSAGE = "the explode plugin failed on purpose"
BUILD_MESSAGE = "the explode plugin could not be built, on purpose"


def cross_check(conf: dict, usernames: set[str]):
    return ()


class Explode:
    __slots__ = ()

    def access(self, ex):
        raise RuntimeError(MESSAGE)


def build(conf: dict, snapshot) -> Explode:
    time.sleep(conf["build_delay"])
    if conf["at_build"] or conf["at_build_if"] and os.path.exists(conf["at_build_if"]):
        raise RuntimeError(BUILD_MESSAGE)
    return Explode()
