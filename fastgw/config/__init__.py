"""Configuration: schema and validation (types, schema), files (loader), compilation."""

from .types import ConfigError

__all__ = ["ConfigError", "load_file"]


def load_file(path: str) -> dict:
    """Read, parse and validate a configuration file; ConfigError names every fault."""
    from . import loader, schema
    return schema.validate(loader.read(path))
