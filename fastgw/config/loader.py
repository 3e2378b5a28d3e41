"""Reading and writing configuration files (YAML or JSON)."""

from __future__ import annotations

import json
import os
import re
import tempfile

import yaml

from .types import ConfigError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (list, dict)):  # "? [a, b]": no name of anything
                mark = key_node.start_mark
                raise ConfigError([(f"line {mark.line + 1}", "a key must be a name, not a "
                                                             f"{type(key).__name__}")])
            if key in seen:
                mark = key_node.start_mark
                raise ConfigError([(f"line {mark.line + 1}", f"duplicate key {key!r}")])
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def json_object(pairs):
    """A JSON object that names no key twice (json's object_pairs_hook)."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise ConfigError([("(json)", f"duplicate key {key!r}")])
        out[key] = value
    return out


def parse(text: str, filename: str = "") -> object:
    """The data in a YAML or JSON document; ConfigError when it cannot be parsed."""
    try:
        if filename.endswith(".json"):
            return json.loads(text, object_pairs_hook=json_object)
        return yaml.load(text, Loader=_StrictLoader)
    except json.JSONDecodeError as exc:
        raise ConfigError([(f"line {exc.lineno}", f"invalid JSON: {exc.msg}")]) from None
    except RecursionError:
        raise ConfigError([("(top level)", "is nested too deeply")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_error(exc, text)]) from None


# What PyYAML quotes of the text it read: an alias, a tag, an anchor (repeated nowhere);
# a character, or a token's name ("'<stream end>'"), which are kept.
_QUOTED = re.compile(r" ?'([^']*)'")
_SYNTAX_HINT = " (a value that starts with *, ! or & is read as YAML syntax: quote it)"


def _unquoted(match: re.Match) -> str:
    said = match[1]
    if len(said) == 1 or len(said) == 2 and said[0] == "\\":  # a character
        return match[0]
    if said[:1] == "<" and said[-1:] == ">":  # a token PyYAML names: no tag ends in ">"
        return match[0]
    return ""


def _yaml_error(exc: yaml.YAMLError, text: str) -> tuple[str, str]:
    """Where and what a YAML error in `text` is, without the words PyYAML quotes of it:
    a secret or a key written unquoted ("key: *abc...") is an alias or a tag to it, and
    would be repeated to the terminal and the log."""
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not take
        return (f"line {text.count(chr(10), 0, exc.position) + 1}",
                f"invalid YAML: character #x{exc.character:04x}: {exc.reason}")
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
    what = _QUOTED.sub(_unquoted, getattr(exc, "problem", None) or "cannot be parsed")
    if "alias" in what or "tag" in what or "anchor" in what or "occurrence" in what:
        what += _SYNTAX_HINT
    return where, f"invalid YAML: {what}"


def read(path: str) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError([(path, f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([(path, "is not UTF-8 text")]) from None
    return parse(text, path)


def dump(conf: dict, filename: str = "") -> str:
    if filename.endswith(".json"):
        return json.dumps(conf, indent=2) + "\n"
    text = yaml.safe_dump(conf, sort_keys=False, allow_unicode=True)
    if "\x85" in text:  # PyYAML writes NEL as it is, and reads it back as a line break
        text = yaml.safe_dump(conf, sort_keys=False)  # every other character escaped
    return text


def write_atomically(path: str, conf: dict) -> None:
    """Replace `path` with `conf`. Comments are not kept."""
    replace_file(path, dump(conf, path).encode())


def replace_file(path: str, data: bytes) -> None:
    """Replace `path` with `data` (mode 0600): temp file, fsync, rename. A symbolic link
    stays one: the file it leads to is replaced."""
    path = os.path.realpath(path)
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".fastgw-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
