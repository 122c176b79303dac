"""Looking many (type, id) keys up with one statement: ``WITH k(t, i) AS (VALUES (?, ?), ...)``
joined to a table by key, which seeks its index once a pair (an ``IN`` over row values scans)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

CHUNK = 400  # pairs a statement: 800 parameters, under every SQLite's limit
STEP = 16  # a statement's pairs are padded to a multiple of this (see chunks)


def chunks(keys: Iterable[tuple[str, str]]) -> Iterator[tuple[str, list[str]]]:
    """The distinct keys, CHUNK at a time: (``(?, ?), ...`` for a VALUES list, its parameters).  Each
    chunk is padded with its last key to a multiple of STEP pairs, so that a few statement texts
    serve every size, each prepared once and then found in the connection's cache; a repeated key
    changes no result."""
    wanted = sorted(set(keys))
    for at in range(0, len(wanted), CHUNK):
        chunk = wanted[at : at + CHUNK]
        chunk += chunk[-1:] * (min(CHUNK, -(-len(chunk) // STEP) * STEP) - len(chunk))
        yield ", ".join(["(?, ?)"] * len(chunk)), [part for key in chunk for part in key]
