"""A small declarative validator: every error carries the path of the value at fault.

A schema is a tree of `Type` objects. `Type.load(value, path, errors)` returns the
value normalised (defaults filled in, names canonical) or `INVALID`, and appends
`(path, message)` to `errors` for each fault, so one pass reports all of them.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Callable, Iterable
from urllib.parse import SplitResult, urlsplit

INVALID = object()
# The largest magnitude of a number in a configuration: what every JSON reader (the
# console's JavaScript among them) keeps exactly, well inside the 64 bits the workers'
# messages carry; infinity and NaN are no numbers here either.
LARGEST = 2 ** 53

Errors = list[tuple[str, str]]
Check = Callable[[Any], str | None]


class ConfigError(ValueError):
    """A configuration was refused; `errors` lists (path, message) pairs."""

    def __init__(self, errors: Iterable[tuple[str, str]]):
        self.errors = list(errors)
        super().__init__("\n".join(f"{path}: {msg}" for path, msg in self.errors))

    def first_line(self) -> str:
        path, msg = self.errors[0]
        more = len(self.errors) - 1
        return f"{path}: {msg}" + (f" (and {more} more)" if more else "")


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


_NOT_URI = re.compile(r"[^\x21-\x7e]")
# a lone surrogate: text that cannot be written as UTF-8 (nor sent to a worker, nor stored)
_SURROGATE = re.compile("[\ud800-\udfff]").search


def http_url(value: str, scheme_rule: str) -> tuple[SplitResult | None, str | None]:
    """`value` split, and what keeps it from being an http(s) URL one may configure, or
    None: it parses, its scheme is http or https (else `scheme_rule`, the message), it has
    a host and a port of 1-65535 if any, and no credentials, nor a character that is not
    in a URI (a space, a control character: its path goes into a request line)."""
    if _NOT_URI.search(value):
        return None, ("must not contain spaces, control or non-ASCII characters "
                      "(percent-encode them)")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        return None, f"is not a valid URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return parts, scheme_rule
    if not parts.hostname:
        return parts, "has no host"
    if parts.username or parts.password:
        return parts, "must not contain credentials"
    if port == 0:
        return parts, "port must be 1-65535"
    return parts, None


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


class Type:
    """`load` checks a value's kind and contents in one call: the call made for each of
    the millions of values in a big configuration."""

    expected = "a value"

    def __init__(self, check: Check | None = None):
        self.check = check

    def load(self, value: Any, path: str, errors: Errors) -> Any:
        raise NotImplementedError

    def wrong_kind(self, value: Any, path: str, errors: Errors) -> Any:
        errors.append((path, f"must be {self.expected}, not {type_name(value)}"))
        return INVALID

    def checked(self, value: Any, path: str, errors: Errors) -> Any:
        """`value`, once the type's own `check` passed."""
        message = self.check(value)
        if message:
            errors.append((path, message))
            return INVALID
        return value


class Str(Type):
    expected = "a string"

    def __init__(self, check: Check | None = None, *, choices: Iterable[str] | None = None,
                 pattern: str | None = None, nonempty: bool = True):
        super().__init__(check)
        self.choices = tuple(choices) if choices else None
        self.pattern = re.compile(pattern) if pattern else None
        self.nonempty = nonempty

    def load(self, value: Any, path: str, errors: Errors) -> Any:
        if not isinstance(value, str):
            return self.wrong_kind(value, path, errors)
        if self.nonempty and not value:
            errors.append((path, "must not be empty"))
            return INVALID
        if not value.isascii() and _SURROGATE(value):  # JSON and YAML can write one
            errors.append((path, "must be Unicode text: a lone surrogate (\\ud800 to "
                                 "\\udfff) is none"))
            return INVALID
        if self.choices and value not in self.choices:
            errors.append((path, f"must be one of {', '.join(self.choices)}, not {value!r}"))
            return INVALID
        if self.pattern and not self.pattern.fullmatch(value):
            errors.append((path, f"must match {self.pattern.pattern}, not {value!r}"))
            return INVALID
        return value if self.check is None else self.checked(value, path, errors)


class Int(Type):
    expected = "an integer"
    kinds: tuple[type, ...] = (int,)
    positive = False  # zero and below refused (durations)

    def __init__(self, check: Check | None = None, *, min: int | None = None,
                 max: int | None = None):
        super().__init__(check)
        self.min, self.max = min, max

    def load(self, value: Any, path: str, errors: Errors) -> Any:
        if not isinstance(value, self.kinds) or isinstance(value, bool):
            return self.wrong_kind(value, path, errors)
        if not -LARGEST <= value <= LARGEST:  # NaN too
            errors.append((path, f"must be a finite number of at most {LARGEST:,} (2^53) "
                                 f"either way"))
            return INVALID
        if self.positive and not value > 0:
            errors.append((path, "must be greater than 0"))
            return INVALID
        if self.min is not None and value < self.min:
            errors.append((path, f"must be at least {self.min}"))
            return INVALID
        if self.max is not None and value > self.max:
            errors.append((path, f"must be at most {self.max}"))
            return INVALID
        return value if self.check is None else self.checked(value, path, errors)


class Num(Int):
    expected = "a number"
    kinds = (int, float)


class Seconds(Num):
    """A duration in seconds, strictly positive."""

    positive = True


class Bool(Type):
    expected = "a boolean"

    def load(self, value: Any, path: str, errors: Errors) -> Any:
        if not isinstance(value, bool):
            return self.wrong_kind(value, path, errors)
        return value if self.check is None else self.checked(value, path, errors)


class Nullable(Type):
    def __init__(self, inner: Type):
        super().__init__()
        self.inner = inner

    def load(self, value: Any, path: str, errors: Errors) -> Any:
        return None if value is None else self.inner.load(value, path, errors)


class List(Type):
    expected = "a list"

    def __init__(self, item: Type, *, min_len: int = 0, unique_by: str | None = None,
                 unique: bool = False):
        super().__init__()
        self.item, self.min_len = item, min_len
        self.unique_by, self.unique = unique_by, unique

    def load(self, value: Any, path: str, errors: Errors) -> Any:
        if not isinstance(value, list):
            return self.wrong_kind(value, path, errors)
        if len(value) < self.min_len:
            errors.append((path, f"must have at least {self.min_len} item"
                                 + ("s" if self.min_len > 1 else "")))
            return INVALID
        out, seen, ok = [], {}, True
        for i, item in enumerate(value):
            loaded = self.item.load(item, f"{path}[{i}]", errors)
            if loaded is INVALID:
                ok = False
                continue
            if self.unique_by or self.unique:
                ident = loaded.get(self.unique_by) if self.unique_by else loaded
                if ident in seen:
                    where = join(path, i)
                    if self.unique_by:
                        where = join(where, self.unique_by)
                    errors.append((where, f"duplicate {self.unique_by or 'value'} {ident!r}"
                                          f" (also at {join(path, seen[ident])})"))
                    ok = False
                elif ident is not None:
                    seen[ident] = i
            out.append(loaded)
        return out if ok else INVALID


class Field:
    __slots__ = ("type", "required", "default", "shared_default")

    def __init__(self, type: Type, *, required: bool = False, default: Any = None):
        self.type, self.required, self.default = type, required, default
        # an immutable default is used as it is; a list or mapping is copied each time
        self.shared_default = not isinstance(default, (list, dict))


class Obj(Type):
    """A mapping with a fixed set of keys; unknown keys are errors."""

    expected = "a mapping"

    def __init__(self, fields: dict[str, Field],
                 check: Callable[[dict, str, Errors], None] | None = None):
        super().__init__()
        self.fields = fields
        self.whole_check = check
        # Each result starts as a copy of this: every key in schema order, with its default.
        self._template = {key: field.default for key, field in fields.items()}
        self._required = tuple(key for key, field in fields.items() if field.required)
        self._copied = tuple(key for key, field in fields.items() if not field.shared_default)

    def load(self, value: Any, path: str, errors: Errors) -> Any:
        if not isinstance(value, dict):
            return self.wrong_kind(value, path, errors)
        return self.convert(value, path, errors)

    def convert(self, value: dict, path: str, errors: Errors) -> Any:
        before = len(errors)
        out = self._template.copy()
        fields = self.fields
        prefix = path + "." if path else ""  # paths are built inline: 2M fields in a big file
        for key, item in value.items():  # the keys given, not every key of the schema
            field = fields.get(key) if isinstance(key, str) else None
            if field is None:
                errors.append((join(path, str(key)), "unknown key"))
                continue
            out[key] = field.type.load(item, prefix + key, errors)
        for key in self._required:
            if key not in value:
                errors.append((prefix + key, "is required"))
        for key in self._copied:
            if key not in value:
                out[key] = copy.deepcopy(out[key])
        if len(errors) > before:
            return INVALID
        if self.whole_check is not None:
            self.whole_check(out, path, errors)
            if len(errors) > before:
                return INVALID
        return out


class Map(Type):
    """A mapping from names to values of one type (chosen per key by `value_for`)."""

    expected = "a mapping"

    def __init__(self, value_for: Callable[[str], Type | None], unknown: str = "unknown key"):
        super().__init__()
        self.value_for, self.unknown = value_for, unknown

    def load(self, value: Any, path: str, errors: Errors) -> Any:
        if not isinstance(value, dict):
            return self.wrong_kind(value, path, errors)
        out, ok = {}, True
        for key, item in value.items():
            where = join(path, str(key))
            kind = self.value_for(key) if isinstance(key, str) else None
            if kind is None:
                errors.append((where, self.unknown))
                ok = False
                continue
            loaded = kind.load({} if item is None else item, where, errors)
            ok = ok and loaded is not INVALID
            out[key] = loaded
        return out if ok else INVALID
