"""Configuration: schema and validation (types, schema), files (loader), compilation."""

import contextlib
import gc

from .types import ConfigError

__all__ = ["ConfigError", "load_file", "gc_paused"]


@contextlib.contextmanager
def gc_paused():
    """Parsing, validating and compiling a configuration creates millions of objects and
    no garbage cycles; the cycle collector would walk the growing heap over and over
    (100,000 consumers: parse, load and compile take twice as long). Paused meanwhile."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_file(path: str) -> dict:
    """Read, parse and validate a configuration file; ConfigError names every fault."""
    from . import loader, schema
    with gc_paused():
        return schema.validate(loader.read(path))
