"""FHIR search: parameters parsed into conditions and SQL over the search index (pure functions).

Supported: the parameters of :data:`bridge.search_index.PARAMETERS` per type, ``_id`` and
``_lastUpdated`` on every type.  Comma-separated values are ORed, repeated parameters ANDed.
Modifiers: ``:exact`` and ``:contains`` on strings, ``:missing`` nowhere (refused).  Unknown
parameters are refused with 400 naming them, rather than ignored: a partner must not receive more
than it asked for.

Dates (and ``_lastUpdated``) compare ranges, as R4 search 3.1.1.5.2 says: the search value's
implicit range against each range in ``search_dates`` (for ``_lastUpdated``, the instant in
``resource_current``), with every R4 prefix (``eq`` by default, ``ne``, ``gt``, ``lt``, ``ge``,
``le``, ``sa``, ``eb``, ``ap``) as :data:`bridge.fhir_dates.PREFIXES` defines it; ``ap`` widens the
search range by 10 % of its distance from now.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from .fhir_dates import PREFIXES, DateRange, DateValueError, approximate, instant_text, parse_range
from .search_index import LAST_UPDATED, PARAMETERS

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
TYPE_PATTERN = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
# an unencoded "+" of a time zone arrives as a space (form encoding); read it as the "+" it was
_ZONE_AS_SPACE = re.compile(r"(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:\d{2})$")
DEFAULT_COUNT, MAX_COUNT = 50, 1000
#: result parameters handled by the views, not by the index
CONTROL = ("_count", "_offset", "_cursor", "_include", "_format", "_since", "_type")


class SearchError(ValueError):
    """A search parameter cannot be used; ``param`` names it for the OperationOutcome."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class DateSearch:
    """One date value of a search: its prefix and the range it compares with (``ap``: widened)."""

    prefix: str
    range: DateRange


@dataclass(frozen=True)
class Condition:
    param: str  # index parameter, "_id" or "_lastUpdated"
    kind: str
    modifier: str
    values: tuple[str, ...]
    dates: tuple[DateSearch, ...] = ()  # kind "date": the values parsed


@dataclass
class SearchQuery:
    res_type: str
    conditions: list[Condition] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    include_patient: bool = False


def date_search(param: str, raw: str, now: int) -> DateSearch:
    """A date search value: an optional R4 prefix and a FHIR date, dateTime or instant; ``now``
    (microseconds since the epoch) sets ``ap``'s tolerance."""
    prefix, value = ("eq", _ZONE_AS_SPACE.sub(r"\1+\2", raw))
    if raw[:2] in PREFIXES:
        prefix, value = raw[:2], value[2:]
    elif raw[:2].isalpha():
        raise SearchError(param, f"{param}: prefix {raw[:2]!r} is not supported; use one of {', '.join(PREFIXES)}")
    try:
        found = parse_range(value)
    except DateValueError as exc:
        raise SearchError(param, f"{param}: {exc}") from None
    return DateSearch(prefix, approximate(found, now) if prefix == "ap" else found)


def _now() -> int:
    return time.time_ns() // 1000


def reference_value(param: str, raw: str, target: str = "Patient") -> str:
    ref = raw if "/" in raw else f"{target}/{raw}"
    res_type, _, res_id = ref.partition("/")
    if res_type != target or not ID_PATTERN.match(res_id):
        raise SearchError(param, f"{param}: expected {target}/<id> or <id>, found {raw[:80]!r}")
    return ref


def since_value(param: str, raw: str) -> str:
    """``_since`` (history, ``$everything``): versions made at or after the start of the value's
    range, as the stored ``last_updated`` text to compare with (see :func:`instant_text`)."""
    try:
        return instant_text(parse_range(_ZONE_AS_SPACE.sub(r"\1+\2", raw)).low)
    except DateValueError as exc:
        raise SearchError(param, f"{param}: {exc}") from None


def non_negative_int(param: str, raw: str, maximum: int) -> int:
    if not raw.isdigit() or int(raw) > maximum:
        raise SearchError(param, f"{param}: expected an integer from 0 to {maximum}, found {raw[:20]!r}")
    return int(raw)


def parse_search(res_type: str, args: list[tuple[str, str]], extra_control: tuple[str, ...] = (),
                 now: int | None = None) -> SearchQuery:
    """Parse a type-level search's query parameters (in order, repeated ones kept); ``now``
    (microseconds since the epoch, default the clock) is what ``ap`` on a date is measured from."""
    known = PARAMETERS.get(res_type, {})
    now = _now() if now is None else now
    query = SearchQuery(res_type)
    for name, raw in args:
        base, _, modifier = name.partition(":")
        if base in extra_control:
            continue
        if base == "_count":
            query.count = non_negative_int(name, raw, MAX_COUNT)
        elif base in ("_offset", "_cursor"):
            continue  # the page: bridge.api.paging
        elif base == "_format":
            if raw not in ("json", "application/json", "application/fhir+json"):
                raise SearchError(name, "_format: only JSON is served")
        elif base == "_include":
            if raw not in (f"{res_type}:patient", f"{res_type}:subject") or "patient" not in known:
                raise SearchError(name, f"_include: only {res_type}:patient is supported")
            query.include_patient = True
        elif base == "_id":
            values = tuple(raw.split(","))
            if not all(ID_PATTERN.match(v) for v in values):
                raise SearchError(name, f"_id: expected resource ids, found {raw[:80]!r}")
            query.conditions.append(Condition("_id", "id", "", values))
        elif base == LAST_UPDATED:
            if modifier:
                raise SearchError(name, f"{name}: modifier :{modifier} is not supported for _lastUpdated")
            query.conditions.append(_date_condition(LAST_UPDATED, name, raw, now))
        elif base in known:
            kind = known[base][0]
            allowed = {"string": ("", "exact", "contains")}.get(kind, ("",))
            if modifier not in allowed:
                raise SearchError(name, f"{name}: modifier :{modifier} is not supported for this {kind} parameter")
            if kind == "date":
                query.conditions.append(_date_condition(base, name, raw, now))
                continue
            values = tuple(v for v in raw.split(",") if v != "")
            if not values:
                raise SearchError(name, f"{name}: expected a value")
            if kind == "reference":
                values = tuple(reference_value(name, v) for v in values)
            elif kind == "string":
                values = tuple(v.lower() for v in values)
            query.conditions.append(Condition(base, kind, modifier, values))
        else:
            supported = ", ".join(sorted([*known, "_id", "_lastUpdated", "_count", "_include"]))
            raise SearchError(name, f"search parameter {name!r} is not supported on {res_type}; supported: {supported}")
    return query


def _date_condition(param: str, name: str, raw: str, now: int) -> Condition:
    values = tuple(v for v in raw.split(",") if v != "")
    if not values:
        raise SearchError(name, f"{name}: expected a value")
    return Condition(param, "date", "", values, tuple(date_search(name, v, now) for v in values))


def _like(value: str, contains: bool) -> str:
    escaped = value.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return ("%" if contains else "") + escaped + "%"


def _date_sql(date: DateSearch) -> tuple[str, list[int]]:
    """One prefixed value over ``search_dates d``, spelt from :data:`PREFIXES`."""
    bounds = {"low": date.range.low, "high": date.range.high}
    ors, params = [], []
    for conjunction in PREFIXES[date.prefix]:
        ors.append(" AND ".join(f"d.{mine} {op} ?" for mine, op, _ in conjunction))
        params.extend(bounds[theirs] for _, _, theirs in conjunction)
    return "(" + " OR ".join(f"({part})" for part in ors) + ")", params


MILLI = 1000  # microseconds: the precision of the lastUpdated instants this bridge writes
# instant_text covers years 0001-9999: an ``ap`` widened beyond them is clamped (nothing is stored there)
_FIRST, _LAST = parse_range("0001").low, parse_range("9999").high - MILLI


def _last_updated_sql(date: DateSearch) -> tuple[str, list[str]]:
    """One prefixed value over ``c.last_updated``.  The bridge writes lastUpdated itself, always in
    :func:`instant_text`'s form, which orders as time does; the instant ``t`` is the range
    ``[t, t + 1 ms)``, so every bound of :data:`PREFIXES` becomes ``t >= text`` or ``t < text``."""
    bounds = {"low": date.range.low, "high": date.range.high}
    ors, params = [], []
    for conjunction in PREFIXES[date.prefix]:
        ands = []
        for mine, op, theirs in conjunction:
            limit = bounds[theirs] - (MILLI if mine == "high" else 0)  # t + 1 ms OP x  <=>  t OP x - 1 ms
            floor = limit - limit % MILLI
            # t is a whole millisecond: t >= x <=> t >= ceil(x); t > x <=> t >= floor(x) + 1 ms;
            # t < x <=> t < ceil(x); t <= x <=> t < floor(x) + 1 ms
            at = floor + MILLI if op in (">", "<=") or floor != limit else floor
            ands.append("c.last_updated >= ?" if op in (">=", ">") else "c.last_updated < ?")
            params.append(instant_text(min(max(at, _FIRST), _LAST)))
        ors.append(" AND ".join(ands))
    return "(" + " OR ".join(f"({part})" for part in ors) + ")", params


def condition_sql(cond: Condition) -> tuple[str, list]:
    """SQL over ``resource_current c`` for one condition (values ORed)."""
    if cond.kind == "id":
        return f"c.res_id IN ({', '.join('?' * len(cond.values))})", list(cond.values)
    if cond.param == LAST_UPDATED:
        parts = [_last_updated_sql(d) for d in cond.dates]
        return "(" + " OR ".join(p for p, _ in parts) + ")", [x for _, ps in parts for x in ps]
    if cond.kind == "date":
        parts = [_date_sql(d) for d in cond.dates]
        sql = ("EXISTS (SELECT 1 FROM search_dates d WHERE d.serial = c.serial "
               f"AND d.param = ? AND ({' OR '.join(p for p, _ in parts)}))")
        return sql, [cond.param, *(x for _, ps in parts for x in ps)]
    if cond.kind in ("token", "reference") or (cond.kind == "string" and cond.modifier == "exact"):
        test, params = f"t.value IN ({', '.join('?' * len(cond.values))})", list(cond.values)
    else:  # string
        contains = cond.modifier == "contains"
        test = "(" + " OR ".join(["t.value LIKE ? ESCAPE '!'"] * len(cond.values)) + ")"
        params = [_like(v, contains) for v in cond.values]
    sql = ("EXISTS (SELECT 1 FROM search_tokens t WHERE t.serial = c.serial "
           f"AND t.param = ? AND {test})")
    return sql, [cond.param, *params]


def search_sql(query: SearchQuery) -> tuple[str, list]:
    """All matches (type, id, version, patient, lastUpdated), newest first; paging happens after
    consent filtering."""
    where: list[str] = ["c.res_type = ?"]
    params: list = [query.res_type]
    for cond in query.conditions:
        sql, ps = condition_sql(cond)
        where.append(sql)
        params.extend(ps)
    return ("SELECT c.res_type, c.res_id, c.version, c.patient, c.last_updated FROM resource_current c WHERE "
            + " AND ".join(where) + " ORDER BY c.last_updated DESC, c.res_id"), params
