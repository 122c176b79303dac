"""FHIR R4 date, dateTime, instant and Period values as the implicit ranges date search compares (pure).

FHIR R4 search, 3.1.1.5.2 "date": every date value is an implicit range, as wide as its precision
(``2025`` is the whole year, ``2025-03-04T10:00`` the minute), and a Period is the range from its
start's low to its end's high.  Prefixes (3.1.1.4, table of prefixes) compare the range of the
search value with the range of the target value in the resource.

Ranges are half-open, ``[low, high)``, in **microseconds since 1970-01-01T00:00:00Z** (integers):
they compare exactly as numbers on SQLite and PostgreSQL alike (``BIGINT``), hold years 0001-9999
at any offset, and need no text format kept zero-padded.  Digits finer than a microsecond widen the
range to the microsecond that holds it.  A Period's missing start or end is :data:`OPEN_LOW` or
:data:`OPEN_HIGH`, beyond every real date, so an open end needs no NULL in the comparisons
(R4: a missing end means the period is ongoing).

A dateTime without a time zone is taken as UTC: FHIR says the server's time zone applies, and
this server's is UTC.  The same holds for a date (FHIR's date has no zone): ``2025-01-01`` is that
day in UTC, so ``2025-01-01T23:30:00-05:00`` (04:30 UTC on the 2nd) is not in it.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import date
from typing import Any, NamedTuple

MICROS = 1_000_000
DAY = 86_400 * MICROS
OPEN_LOW, OPEN_HIGH = -(2**62), 2**62  # int64 both, far beyond year 0001 (-6.2e16) and 9999 (2.5e17)
_EPOCH = date(1970, 1, 1).toordinal()

# year, then optionally month, day, hh:mm, :ss, .fraction and a zone; FHIR's date, dateTime and
# instant are all of this shape (minute precision and a missing zone are accepted, as in search values)
_VALUE = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})(?:T(?P<hour>\d{2}):(?P<minute>\d{2})"
    r"(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?",
    re.ASCII,
)


class DateValueError(ValueError):
    """A value is not a FHIR date, dateTime, instant or Period; the message names the value."""


class DateRange(NamedTuple):
    """``[low, high)`` in microseconds since the epoch, UTC."""

    low: int
    high: int


def _bad(value: str, why: str) -> DateValueError:
    return DateValueError(f"{value[:40]!r} is not a FHIR date or dateTime: {why}")


def parse_range(value: str) -> DateRange:
    """The implicit range of a FHIR date, dateTime or instant, as wide as its precision."""
    found = _VALUE.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        raise _bad(str(value), "expected YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.fff]][Z|+hh:mm|-hh:mm]")
    # the groups as matched (None: not given), read as numbers below
    year_text, month_text, day_text, hour_text, minute_text, second_text, fraction, zone = found.groups()
    year = int(year_text)
    if year == 0:
        raise _bad(value, "there is no year 0000")
    month = 1 if month_text is None else int(month_text)
    if not 1 <= month <= 12:
        raise _bad(value, f"month {month:02d} is not 01-12")
    days_in_month = calendar.mdays[month] + (month == 2 and calendar.isleap(year))
    day = 1 if day_text is None else int(day_text)
    if not 1 <= day <= days_in_month:
        raise _bad(value, f"day {day:02d} is not in {year:04d}-{month:02d}")
    seconds = 0  # into the day
    if hour_text is not None:  # the minute comes with it
        hour, minute, second = int(hour_text), int(minute_text), 0 if second_text is None else int(second_text)
        if hour > 23 or minute > 59 or second > 60:  # 60: FHIR's pattern allows a leap second
            raise _bad(value, "time out of range")
        seconds = (hour * 60 + minute) * 60 + second
    offset = 0
    if zone and zone != "Z":
        zone_hours, zone_minutes = int(zone[1:3]), int(zone[4:6])
        if zone_minutes > 59 or zone_hours * 60 + zone_minutes > 14 * 60:
            raise _bad(value, f"time zone {zone} is not within -14:00..+14:00")
        offset = (1 if zone[0] == "+" else -1) * (zone_hours * 60 + zone_minutes) * 60 * MICROS
    low = (date(year, month, day).toordinal() - _EPOCH) * DAY + seconds * MICROS - offset
    if fraction:
        low += int(fraction[:6].ljust(6, "0"))
        width = 10 ** max(0, 6 - len(fraction))
    elif second_text is not None:
        width = MICROS
    elif minute_text is not None:
        width = 60 * MICROS
    elif day_text is not None:
        width = DAY
    elif month_text is not None:
        width = days_in_month * DAY
    else:
        width = (366 if calendar.isleap(year) else 365) * DAY
    return DateRange(low, low + width)


def instant_text(micros: int) -> str:
    """The instant ``micros`` as this bridge writes ``meta.lastUpdated``: UTC, whole milliseconds
    (rounded up), ``Z``; that fixed form orders as time does, so stored instants compare as text."""
    millis = -(-micros // 1000)
    days, rest = divmod(millis, 86_400_000)
    day = date.fromordinal(_EPOCH + days)
    seconds, ms = divmod(rest, 1000)
    return f"{day.isoformat()}T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{ms:03d}Z"


def now_instant() -> str:
    """The current instant in the stored form (:func:`instant_text`)."""
    return instant_text(time.time_ns() // 1000)


_STORED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", re.ASCII)


def stored_instant(value: str) -> str:
    """An instant in :func:`instant_text`'s form, the one ``meta.lastUpdated`` is stored in (so
    stored instants compare as text); raises :class:`DateValueError` for what is no instant."""
    return value if _STORED.fullmatch(value) else instant_text(parse_range(value).low)


def period_range(period: dict) -> DateRange:
    """A Period from its start's low to its end's high; a missing bound is open (R4: no end = ongoing)."""
    start, end = period.get("start"), period.get("end")
    if start is None and end is None:
        raise DateValueError(f"Period {period!r:.60} has neither start nor end")
    low = OPEN_LOW if start is None else parse_range(start).low
    high = OPEN_HIGH if end is None else parse_range(end).high
    if high <= low:
        raise DateValueError(f"Period {period!r:.80} ends before it starts")
    return DateRange(low, high)


def value_range(value: Any) -> DateRange:
    """The range of a date, dateTime or instant (text) or a Period (object)."""
    if isinstance(value, dict):
        return period_range(value)
    if isinstance(value, str):
        return parse_range(value)
    raise DateValueError(f"{value!r:.40} is neither a FHIR date nor a Period")


# -- prefixes -----------------------------------------------------------------------------------

#: The R4 prefixes over ranges, written as data so that SQL and :func:`matches` read one definition.
#: Each is a disjunction of conjunctions of (target bound, operator, search bound): the target is the
#: resource's range, the search value's range gives ``low``/``high`` on the right.
PREFIXES: dict[str, tuple[tuple[tuple[str, str, str], ...], ...]] = {
    # the range of the search value fully contains the range of the target value
    "eq": ((("low", ">=", "low"), ("high", "<=", "high")),),
    # ... does not fully contain it
    "ne": ((("low", "<", "low"),), (("high", ">", "high"),)),
    # the range above the search value intersects the target's range
    "gt": ((("high", ">", "high"),),),
    # the range below the search value intersects the target's range
    "lt": ((("low", "<", "low"),),),
    # as gt, or as eq
    "ge": ((("high", ">", "high"),), (("low", ">=", "low"), ("high", "<=", "high"))),
    # as lt, or as eq
    "le": ((("low", "<", "low"),), (("low", ">=", "low"), ("high", "<=", "high"))),
    # no overlap, and the range above the search value contains the target: it starts at or after high
    "sa": ((("low", ">=", "high"),),),
    # no overlap, and the range below contains the target: it ends at or before low
    "eb": ((("high", "<=", "low"),),),
    # the ranges overlap, the search range first widened by :func:`approximate`
    "ap": ((("low", "<", "high"), ("high", ">", "low")),),
}
_COMPARE = {"<": int.__lt__, "<=": int.__le__, ">": int.__gt__, ">=": int.__ge__}

#: ``ap``: 10 % of the gap between now and the search value, as R4 recommends for dates
APPROXIMATE_SHARE = 0.1


def approximate(search: DateRange, now: int) -> DateRange:
    """The search range widened on both sides by :data:`APPROXIMATE_SHARE` of its distance from now
    (nothing when now is inside it: ``ap`` of the current year is the year)."""
    gap = max(search.low - now, now - search.high, 0)
    tolerance = int(gap * APPROXIMATE_SHARE)
    return DateRange(search.low - tolerance, search.high + tolerance)


def matches(prefix: str, search: DateRange, target: DateRange) -> bool:
    """Whether a resource's ``target`` range satisfies ``prefix search`` (``ap``: already widened)."""
    return any(all(_COMPARE[op](getattr(target, mine), getattr(search, theirs)) for mine, op, theirs in conjunction)
               for conjunction in PREFIXES[prefix])
