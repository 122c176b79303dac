"""FHIR date values as implicit ranges (bridge.fhir_dates): each precision, time zones, Periods,
malformed values, and the R4 prefixes over ranges.  Expected bounds are computed with ``datetime``,
independently of the parser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.fhir_dates import (
    OPEN_HIGH,
    OPEN_LOW,
    PREFIXES,
    DateRange,
    DateValueError,
    approximate,
    instant_text,
    matches,
    parse_range,
    period_range,
    stored_instant,
    value_range,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def us(iso: str) -> int:
    """Microseconds since the epoch of an ISO 8601 instant (a naive one is UTC)."""
    moment = datetime.fromisoformat(iso)
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1)


@pytest.mark.parametrize("value, low, high", [
    # a year, a month, a day: the whole of it, in UTC
    ("2025", "2025-01-01T00:00", "2026-01-01T00:00"),
    ("2024", "2024-01-01T00:00", "2025-01-01T00:00"),  # leap year: 366 days
    ("2025-02", "2025-02-01T00:00", "2025-03-01T00:00"),
    ("2024-02", "2024-02-01T00:00", "2024-03-01T00:00"),  # leap February: 29 days
    ("2025-12", "2025-12-01T00:00", "2026-01-01T00:00"),
    ("2024-02-29", "2024-02-29T00:00", "2024-03-01T00:00"),  # leap day
    ("2025-03-04", "2025-03-04T00:00", "2025-03-05T00:00"),
    # minutes and seconds; no zone: UTC
    ("2025-03-04T10:00", "2025-03-04T10:00", "2025-03-04T10:01"),
    ("2025-03-04T10:00Z", "2025-03-04T10:00", "2025-03-04T10:01"),
    ("2025-03-04T10:00:05", "2025-03-04T10:00:05", "2025-03-04T10:00:06"),
    ("2025-03-04T10:00:05Z", "2025-03-04T10:00:05", "2025-03-04T10:00:06"),
    # fractional seconds: as wide as their last digit
    ("2025-03-04T10:00:05.1Z", "2025-03-04T10:00:05.100", "2025-03-04T10:00:05.200"),
    ("2025-03-04T10:00:05.250Z", "2025-03-04T10:00:05.250", "2025-03-04T10:00:05.251"),
    ("2025-03-04T10:00:05.123456Z", "2025-03-04T10:00:05.123456", "2025-03-04T10:00:05.123457"),
    ("2025-03-04T10:00:05.1234567Z", "2025-03-04T10:00:05.123456", "2025-03-04T10:00:05.123457"),  # widened to 1 µs
    # offsets
    ("2025-03-04T10:00:00+05:30", "2025-03-04T04:30:00", "2025-03-04T04:30:01"),
    ("2025-03-04T10:00:00-05:00", "2025-03-04T15:00:00", "2025-03-04T15:00:01"),
    ("2025-03-04T10:00+14:00", "2025-03-03T20:00", "2025-03-03T20:01"),
    ("2025-01-01T23:30:00-05:00", "2025-01-02T04:30:00", "2025-01-02T04:30:01"),  # the next day in UTC
    ("2025-01-01T00:30:00+01:00", "2024-12-31T23:30:00", "2024-12-31T23:30:01"),  # the previous year in UTC
    ("2024-12-31T23:59:59.999-00:30", "2025-01-01T00:29:59.999", "2025-01-01T00:30:00"),
])
def test_range_of_each_precision_and_zone(value: str, low: str, high: str) -> None:
    assert parse_range(value) == DateRange(us(low), us(high))


def test_extreme_years_at_extreme_offsets() -> None:
    """Bounds beyond what ``datetime`` holds: before year 1 and after year 9999 in UTC."""
    hours14 = 14 * 3600 * 10**6
    assert parse_range("0001-01-01T00:00:00+14:00").low == us("0001-01-01T00:00:00") - hours14
    assert parse_range("9999-12-31T23:59:59-14:00").low == us("9999-12-31T23:59:59") + hours14
    last = parse_range("9999")
    assert last.low == us("9999-01-01T00:00") and last.high - last.low == 365 * 86_400 * 10**6
    assert OPEN_LOW < parse_range("0001-01-01T00:00:00+14:00").low and parse_range("9999").high < OPEN_HIGH


@pytest.mark.parametrize("value, words", [
    ("", "expected YYYY"),
    ("yesterday", "expected YYYY"),
    ("25", "expected YYYY"),
    ("2025-1-1", "expected YYYY"),
    ("2025/01/01", "expected YYYY"),
    ("2025-01-01T10", "expected YYYY"),  # hours without minutes
    ("2025-01-01 10:00", "expected YYYY"),
    ("2025-01-01Z", "expected YYYY"),  # a date has no zone
    ("2025-01-01T10:00:00+0500", "expected YYYY"),
    ("2025-01-01T10:00:00.Z", "expected YYYY"),
    (" 2025", "expected YYYY"),
    ("٢٠٢٥", "expected YYYY"),  # digits, but not ASCII ones
    ("0000", "no year 0000"),
    ("2025-00", "month 00"),
    ("2025-13", "month 13"),
    ("2025-02-29", "day 29 is not in 2025-02"),  # not a leap year
    ("2100-02-29", "day 29 is not in 2100-02"),  # centuries are not, unless divisible by 400
    ("2025-04-31", "day 31"),
    ("2025-01-00", "day 00"),
    ("2025-01-01T24:00", "time out of range"),
    ("2025-01-01T10:60", "time out of range"),
    ("2025-01-01T10:00:61", "time out of range"),
    ("2025-01-01T10:00:00+14:30", "time zone +14:30"),
    ("2025-01-01T10:00:00-15:00", "time zone -15:00"),
    ("2025-01-01T10:00:00+05:60", "time zone +05:60"),
])
def test_malformed_values_are_rejected_naming_the_value(value: str, words: str) -> None:
    with pytest.raises(DateValueError) as caught:
        parse_range(value)
    assert repr(value[:40]) in str(caught.value) and words in str(caught.value)


def test_leap_years_and_the_leap_second() -> None:
    assert parse_range("2000-02-29").low == us("2000-02-29T00:00")  # divisible by 400: a leap year
    assert parse_range("2024-02").high - parse_range("2024-02").low == 29 * 86_400 * 10**6
    leap_second = parse_range("2016-12-31T23:59:60Z")  # FHIR's pattern allows second 60
    assert leap_second == DateRange(us("2017-01-01T00:00:00"), us("2017-01-01T00:00:01"))


@pytest.mark.parametrize("period, low, high", [
    ({"start": "2025-03-01", "end": "2025-03-10"}, us("2025-03-01T00:00"), us("2025-03-11T00:00")),  # end's day counts
    ({"start": "2025-03-01T10:00:00+01:00", "end": "2025-03"}, us("2025-03-01T09:00"), us("2025-04-01T00:00")),
    ({"start": "2025-03-04T12:00:00Z"}, us("2025-03-04T12:00"), OPEN_HIGH),  # ongoing
    ({"end": "2025-02-01"}, OPEN_LOW, us("2025-02-02T00:00")),
    ({"start": "2025-03-04", "end": "2025-03-04"}, us("2025-03-04T00:00"), us("2025-03-05T00:00")),
])
def test_period_is_one_range_with_open_ends(period: dict, low: int, high: int) -> None:
    assert period_range(period) == value_range(period) == DateRange(low, high)


@pytest.mark.parametrize("value, words", [
    ({}, "neither start nor end"),
    ({"start": "2025-03-10", "end": "2025-03-01"}, "ends before it starts"),
    ({"start": "2025-03-32"}, "day 32"),
    ({"start": "2025-03-01", "end": "soon"}, "'soon'"),
    (20250301, "neither a FHIR date nor a Period"),
])
def test_malformed_periods_are_rejected(value: object, words: str) -> None:
    with pytest.raises(DateValueError, match=words):
        value_range(value)


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
       st.integers(min_value=-14 * 60, max_value=14 * 60), st.sampled_from(["minute", "second", "fraction"]))
def test_low_is_the_instant_written(moment: datetime, offset_minutes: int, precision: str) -> None:
    zone = timezone(timedelta(minutes=offset_minutes))
    moment = moment.replace(tzinfo=zone, second=0 if precision == "minute" else moment.second,
                            microsecond=moment.microsecond if precision == "fraction" else 0)
    spec = {"minute": "minutes", "second": "seconds", "fraction": "microseconds"}[precision]
    text = moment.isoformat(timespec=spec).replace("+00:00", "Z")
    found = parse_range(text)
    assert found.low == (moment - EPOCH) // timedelta(microseconds=1)
    assert found.high - found.low == {"minute": 60 * 10**6, "second": 10**6, "fraction": 1}[precision]


# -- prefixes over ranges ---------------------------------------------------------------------------

S = DateRange(100, 200)  # the search value's range


@pytest.mark.parametrize("target, expected", [
    # target range  -> the prefixes it satisfies against [100, 200)
    (DateRange(100, 200), {"eq", "ge", "le", "ap"}),  # the same range
    (DateRange(120, 150), {"eq", "ge", "le", "ap"}),  # inside
    (DateRange(50, 100), {"ne", "lt", "le", "eb"}),  # just before: half-open, no overlap
    (DateRange(200, 250), {"ne", "gt", "ge", "sa"}),  # just after
    (DateRange(50, 150), {"ne", "lt", "le", "ap"}),  # overlaps the start
    (DateRange(150, 250), {"ne", "gt", "ge", "ap"}),  # overlaps the end
    (DateRange(50, 250), {"ne", "lt", "gt", "le", "ge", "ap"}),  # contains the search range
    (DateRange(OPEN_LOW, 150), {"ne", "lt", "le", "ap"}),  # open start
    (DateRange(150, OPEN_HIGH), {"ne", "gt", "ge", "ap"}),  # open end (ongoing)
    (DateRange(300, OPEN_HIGH), {"ne", "gt", "ge", "sa"}),
    (DateRange(OPEN_LOW, OPEN_HIGH), {"ne", "lt", "gt", "le", "ge", "ap"}),
])
def test_each_prefix_against_ranges(target: DateRange, expected: set[str]) -> None:
    assert {p for p in PREFIXES if matches(p, S, target)} == expected


def test_prefixes_are_r4s() -> None:
    assert list(PREFIXES) == ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]


@pytest.mark.parametrize("now, expected", [
    (150, DateRange(100, 200)),  # now inside: no tolerance
    (1200, DateRange(0, 300)),  # 1000 after the end: 100 either side
    (-900, DateRange(0, 300)),  # 1000 before the start
    (205, DateRange(100, 200)),  # 10 % of 5 rounds down to nothing
])
def test_approximate_widens_by_a_tenth_of_the_gap_to_now(now: int, expected: DateRange) -> None:
    assert approximate(S, now) == expected


@pytest.mark.parametrize("value, text", [
    ("2026-03-01T20:00:00-05:00", "2026-03-02T01:00:00.000Z"),
    ("2026-03-01T20:00:00.0001Z", "2026-03-01T20:00:00.001Z"),  # rounded up to the millisecond
    ("1969-12-31T23:59:59.999Z", "1969-12-31T23:59:59.999Z"),
    ("2024-02-29", "2024-02-29T00:00:00.000Z"),
])
def test_instant_text_is_the_stored_form(value, text):
    assert instant_text(parse_range(value).low) == text


@pytest.mark.parametrize("value, stored", [
    ("2026-01-03T10:00:00.000Z", "2026-01-03T10:00:00.000Z"),
    ("2026-01-03T10:00:00Z", "2026-01-03T10:00:00.000Z"),
    ("2026-01-03T05:00:00.25-05:00", "2026-01-03T10:00:00.250Z"),
])
def test_stored_instants_have_one_form(value, stored):
    assert stored_instant(value) == stored


def test_a_stored_instant_must_be_a_date():
    with pytest.raises(DateValueError):
        stored_instant("yesterday")
