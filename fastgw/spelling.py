"""Every spelling of a word that some reader takes for the same word, as a set built once,
so that matching any of them on the request path is one set look-up."""

from __future__ import annotations

from typing import Callable, Iterable


def spellings(word: bytes, alternatives: Callable[[bytes], Iterable[bytes]]) -> frozenset[bytes]:
    """Each way of writing `word` when each of its bytes may be any of `alternatives(byte)`."""
    variants = [b""]
    for ch in word:
        options = tuple(dict.fromkeys(alternatives(bytes([ch]))))
        variants = [v + x for v in variants for x in options]
    return frozenset(variants)


def any_case(word: bytes) -> frozenset[bytes]:
    """"Bearer ", "bearer ", "BEARER ", ...: every upper/lower-case spelling."""
    return spellings(word, lambda c: (c.lower(), c.upper()))


def header_names(names: Iterable[bytes]) -> frozenset[bytes]:
    """Lower-case header names with every mix of "-" and "_": CGI and WSGI servers (gunicorn,
    Django, Flask) read X_Consumer_Username as X-Consumer-Username, so both are one header."""
    return frozenset().union(*(spellings(name, lambda c: (b"-", b"_") if c in b"-_" else (c,))
                               for name in names))
