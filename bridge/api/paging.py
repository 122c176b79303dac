"""Bundle paging by position: a link names the entry its page follows, not how many came before.

An ``_offset`` link moves when data changes between two requests: a resource stored or updated
meanwhile shifts every later entry by one, so a partner paging through sees an entry twice or never.
The links built here carry ``_cursor``, the sort key of the entry just before the page (base64url
JSON), and a page starts at the first entry that sorts after it in the list as it is now; a new or
updated resource moves to the front and shifts nothing behind a cursor.  ``_offset`` is still read,
for links handed out before.

The order is Python's, on the keys given (the list is sorted here): SQL collations differ between
databases, and a cursor must find its place in the same order that built it.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import total_ordering
from typing import Generic, TypeVar
from urllib.parse import urlencode

from ..fhir_query import SearchError, non_negative_int

T = TypeVar("T")
Key = tuple[str | int, ...]


@total_ordering
class _Descending:
    """A key part that sorts in reverse."""

    __slots__ = ("value",)

    def __init__(self, value: str | int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Descending) and self.value == other.value

    def __lt__(self, other: _Descending) -> bool:
        return self.value > other.value

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Order(Generic[T]):
    """How a list is ordered: ``key`` gives an entry's sort key (strings and integers), and
    ``descending`` says, part by part, which of them sort newest or largest first."""

    key: Callable[[T], Key]
    descending: tuple[bool, ...]

    def sort(self, items: list[T]) -> None:
        for at in reversed(range(len(self.descending))):  # least significant first: sort is stable
            items.sort(key=lambda item, at=at: self.key(item)[at], reverse=self.descending[at])

    def comparable(self, key: Sequence[str | int]) -> tuple:
        return tuple(_Descending(v) if d else v for v, d in zip(key, self.descending, strict=True))


def encode_cursor(key: Key) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key), separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(text: str, parts: int) -> Key:
    """The key a ``_cursor`` names (SearchError naming ``_cursor`` if it is not one of ours)."""
    try:
        key = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error):
        key = None
    if not isinstance(key, list) or len(key) != parts or not all(type(v) in (str, int) for v in key):
        raise SearchError("_cursor", "_cursor is not a position this server gave out; start again from the "
                          "first page")
    return tuple(key)


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    start: int
    links: list[tuple[str, str]]


def paginate(items: list[T], order: Order[T], url: str, args: list[tuple[str, str]], count: int) -> Page[T]:
    """Sort ``items`` and take the page ``args`` ask for (``_cursor``, or ``_offset``), with its
    self, first, previous, next and last links (``url``: the endpoint, without a query)."""
    order.sort(items)
    cursors = [v for k, v in args if k == "_cursor"]
    offsets = [v for k, v in args if k == "_offset"]
    if cursors and offsets:
        raise SearchError("_cursor", "_cursor and _offset cannot be combined")
    if cursors:
        after = order.comparable(decode_cursor(cursors[-1], len(order.descending)))
        try:
            start = bisect.bisect_right(items, after, key=lambda item: order.comparable(order.key(item)))
        except TypeError:  # a string where the order has a number, or the other way round
            raise SearchError("_cursor", "_cursor does not fit this list; start again from the first page") from None
    else:
        start = min(len(items), non_negative_int("_offset", offsets[-1], 10**9)) if offsets else 0
    page = items[start : start + count] if count else []
    kept = [(k, v) for k, v in args if k not in ("_cursor", "_offset", "_count")]

    def link(at: int) -> str:
        position = [("_cursor", encode_cursor(order.key(items[at - 1])))] if at > 0 else []
        return f"{url}?" + urlencode([*kept, ("_count", str(count)), *position])

    links = [("self", link(start)), ("first", link(0))]
    if count and start + count < len(items):
        links.append(("next", link(start + count)))
    if count and start > 0:
        links.append(("previous", link(max(0, start - count))))
    if count and items:
        links.append(("last", link(((len(items) - 1) // count) * count)))
    return Page(page, start, links)
