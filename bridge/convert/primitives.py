"""HL7v2 primitive values -> FHIR primitive values (dates, times, numbers, codes).

These are the only conversions written in code: they are formats, not mappings.  Each raises
HL7Error 102 (data type error) with the location when the value is malformed.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..hl7.types import HL7Error

_DTM = re.compile(
    r"(\d{4})(\d{2})?(\d{2})?(?:(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,4}))?)?\s*(?:([+-])(\d{2})(\d{2}))?\Z"
)
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)\Z")


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise HL7Error("207", "", f"mapping setting timezone {name!r} is not a known time zone") from exc


def _parts(value: str, where: str) -> tuple[str | None, ...]:
    """The groups of a valid HL7 date/time: year, month, day, hour, minute, second, fraction, and
    the offset's sign, hours and minutes."""
    m = _DTM.match(value.strip())
    if not m:
        raise HL7Error("102", where, f"{value!r} is not an HL7 date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])")
    groups = m.groups()
    year, month, day, hour, minute, second, _, sign, zh, zm = groups
    try:
        datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
                 min(int(second or 0), 59))
        if sign and (int(zh) > 14 or int(zm) > 59):
            raise ValueError("time zone offset out of range")
    except ValueError as exc:
        raise HL7Error("102", where, f"{value!r} is not a valid date/time: {exc}") from exc
    return groups


def _date(year: str, month: str | None, day: str | None) -> str:
    return "-".join(p for p in (year, month, day if month else None) if p)


def to_date(value: str, where: str) -> str:
    """FHIR date (YYYY, YYYY-MM or YYYY-MM-DD); a time part is dropped."""
    year, month, day = _parts(value, where)[:3]
    return _date(year, month, day)


def to_datetime(value: str, where: str, timezone: str = "UTC") -> str:
    """FHIR dateTime.  FHIR requires a zone once there is a time; an HL7 time without one is local
    time of the sender, so the site's ``timezone`` setting (an IANA name) supplies the offset."""
    year, month, day, hour, minute, second, fraction, sign, zh, zm = _parts(value, where)
    if not hour or not day:
        return _date(year, month, day)
    text = f"{year}-{month}-{day}T{hour}:{minute or '00'}:{second or '00'}"
    if fraction:
        text += f".{fraction}"
    if sign:
        offset = f"{sign}{zh}:{zm}"
    else:
        local = datetime(int(year), int(month), int(day), int(hour), int(minute or 0), min(int(second or 0), 59),
                         tzinfo=_zone(timezone))
        raw = local.strftime("%z")
        offset = f"{raw[:3]}:{raw[3:]}"
    return text + ("Z" if offset in ("+00:00", "-00:00") and not sign else offset)


def to_decimal(value: str, where: str) -> int | float:
    """FHIR decimal as a JSON number; integers stay integers so that "60" is not written 60.0."""
    text = value.strip()
    if not _NUMBER.match(text):
        raise HL7Error("102", where, f"{value!r} is not a number")
    try:
        number = Decimal(text)
    except InvalidOperation as exc:
        raise HL7Error("102", where, f"{value!r} is not a number") from exc
    if number == number.to_integral_value() and "." not in text:
        return int(number)
    return float(number)


def to_positive_int(value: str, where: str) -> int:
    text = value.strip()
    if not text.isdigit() or int(text) < 1:
        raise HL7Error("102", where, f"{value!r} is not a positive integer")
    return int(text)


def to_boolean(value: str, where: str) -> bool:
    """HL7 table 0136 (Y/N) -> boolean."""
    text = value.strip().upper()
    if text in ("Y", "YES", "T", "TRUE", "1"):
        return True
    if text in ("N", "NO", "F", "FALSE", "0"):
        return False
    raise HL7Error("102", where, f"{value!r} is not Y or N")


def to_code(value: str, where: str) -> str:
    """FHIR code: no leading/trailing whitespace, inner runs collapsed to one space."""
    return " ".join(value.split())


def to_string(value: str, where: str) -> str:
    return value.strip()
