"""FHIR search: parameters parsed into conditions and SQL over the search index (pure functions).

Supported: the parameters of :data:`bridge.search_index.PARAMETERS` per type, ``_id`` and
``_lastUpdated`` on every type.  Comma-separated values are ORed, repeated parameters ANDed.
Modifiers: ``:exact`` and ``:contains`` on strings, ``:missing`` nowhere (refused).  Date
prefixes ``eq`` (default), ``lt``, ``le``, ``gt``, ``ge``.  Unknown parameters are refused with
400 naming them, rather than ignored: a partner must not receive more than it asked for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .search_index import PARAMETERS

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
TYPE_PATTERN = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
DATE_PATTERN = re.compile(r"^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$")
DEFAULT_COUNT, MAX_COUNT = 50, 1000
#: result parameters handled by the views, not by the index
CONTROL = ("_count", "_offset", "_include", "_format", "_since", "_type")


class SearchError(ValueError):
    """A search parameter cannot be used; ``param`` names it for the OperationOutcome."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Condition:
    param: str  # index parameter, "_id" or "_lastUpdated"
    kind: str
    modifier: str
    values: tuple[str, ...]


@dataclass
class SearchQuery:
    res_type: str
    conditions: list[Condition] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    offset: int = 0
    include_patient: bool = False


def _date(param: str, raw: str) -> tuple[str, str]:
    prefix, value = ("eq", raw)
    if raw[:2] in ("eq", "lt", "le", "gt", "ge"):
        prefix, value = raw[:2], raw[2:]
    elif raw[:2].isalpha():
        raise SearchError(param, f"{param}: prefix {raw[:2]!r} is not supported; use eq, lt, le, gt or ge")
    if not DATE_PATTERN.match(value):
        raise SearchError(param, f"{param}: expected a FHIR date or dateTime, found {value[:40]!r}")
    return prefix, value


def reference_value(param: str, raw: str, target: str = "Patient") -> str:
    ref = raw if "/" in raw else f"{target}/{raw}"
    res_type, _, res_id = ref.partition("/")
    if res_type != target or not ID_PATTERN.match(res_id):
        raise SearchError(param, f"{param}: expected {target}/<id> or <id>, found {raw[:80]!r}")
    return ref


def non_negative_int(param: str, raw: str, maximum: int) -> int:
    if not raw.isdigit() or int(raw) > maximum:
        raise SearchError(param, f"{param}: expected an integer from 0 to {maximum}, found {raw[:20]!r}")
    return int(raw)


def parse_search(res_type: str, args: list[tuple[str, str]], extra_control: tuple[str, ...] = ()) -> SearchQuery:
    """Parse a type-level search's query parameters (in order, repeated ones kept)."""
    known = PARAMETERS.get(res_type, {})
    query = SearchQuery(res_type)
    for name, raw in args:
        base, _, modifier = name.partition(":")
        if base in extra_control:
            continue
        if base == "_count":
            query.count = non_negative_int(name, raw, MAX_COUNT)
        elif base == "_offset":
            query.offset = non_negative_int(name, raw, 10**9)
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
        elif base == "_lastUpdated":
            query.conditions.append(Condition("_lastUpdated", "date", "", ("".join(_date(name, raw)),)))
        elif base in known:
            kind = known[base][0]
            allowed = {"string": ("", "exact", "contains")}.get(kind, ("",))
            if modifier not in allowed:
                raise SearchError(name, f"{name}: modifier :{modifier} is not supported for this {kind} parameter")
            values = tuple(v for v in raw.split(",") if v != "")
            if not values:
                raise SearchError(name, f"{name}: expected a value")
            if kind == "date":
                values = tuple("".join(_date(name, v)) for v in values)
            elif kind == "reference":
                values = tuple(reference_value(name, v) for v in values)
            elif kind == "string":
                values = tuple(v.lower() for v in values)
            query.conditions.append(Condition(base, kind, modifier, values))
        else:
            supported = ", ".join(sorted([*known, "_id", "_lastUpdated", "_count", "_include"]))
            raise SearchError(name, f"search parameter {name!r} is not supported on {res_type}; supported: {supported}")
    return query


def _like(value: str, contains: bool) -> str:
    escaped = value.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return ("%" if contains else "") + escaped + "%"


def _date_sql(column: str, value: str) -> tuple[str, list[str]]:
    prefix, text = value[:2], value[2:]
    if prefix == "eq":
        return f"{column} LIKE ? ESCAPE '!'", [_like(text, False)]
    if prefix == "ge":
        return f"{column} >= ?", [text]
    if prefix == "gt":
        return f"({column} > ? AND {column} NOT LIKE ? ESCAPE '!')", [text, _like(text, False)]
    if prefix == "le":
        return f"({column} <= ? OR {column} LIKE ? ESCAPE '!')", [text, _like(text, False)]
    return f"{column} < ?", [text]  # lt


def condition_sql(cond: Condition) -> tuple[str, list[str]]:
    """SQL over ``resource_current c`` for one condition (values ORed)."""
    if cond.kind == "id":
        return f"c.res_id IN ({', '.join('?' * len(cond.values))})", list(cond.values)
    if cond.param == "_lastUpdated":
        parts = [_date_sql("c.last_updated", v) for v in cond.values]
        return "(" + " OR ".join(p for p, _ in parts) + ")", [x for _, ps in parts for x in ps]
    if cond.kind in ("token", "reference") or (cond.kind == "string" and cond.modifier == "exact"):
        test, params = f"t.value IN ({', '.join('?' * len(cond.values))})", list(cond.values)
    elif cond.kind == "string":
        contains = cond.modifier == "contains"
        test = "(" + " OR ".join(["t.value LIKE ? ESCAPE '!'"] * len(cond.values)) + ")"
        params = [_like(v, contains) for v in cond.values]
    else:  # date
        parts = [_date_sql("t.value", v) for v in cond.values]
        test, params = "(" + " OR ".join(p for p, _ in parts) + ")", [x for _, ps in parts for x in ps]
    sql = ("EXISTS (SELECT 1 FROM search_tokens t WHERE t.res_type = c.res_type AND t.res_id = c.res_id "
           f"AND t.param = ? AND {test})")
    return sql, [cond.param, *params]


def search_sql(query: SearchQuery) -> tuple[str, list[str]]:
    """All matches (type, id, version, patient), newest first; paging happens after consent filtering."""
    where, params = ["c.res_type = ?"], [query.res_type]
    for cond in query.conditions:
        sql, ps = condition_sql(cond)
        where.append(sql)
        params.extend(ps)
    return ("SELECT c.res_type, c.res_id, c.version, c.patient FROM resource_current c WHERE "
            + " AND ".join(where) + " ORDER BY c.last_updated DESC, c.res_id"), params
