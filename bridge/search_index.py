"""The search-parameter index: current versions only, filled in the transaction that stores a version.

Three tables:

* ``resource_current``: one row per resource: its current version, ``meta.lastUpdated`` and the
  patient whose compartment it is in (``Patient/<id>``; a Patient is in its own).
* ``search_tokens``: (type, id, parameter, value) rows for the current version.  Tokens are kept
  twice, ``code`` and ``system|code``; strings lower-cased.
* ``search_dates``: (type, id, parameter, low, high) rows: each date parameter's value as the
  implicit range FHIR search compares (:mod:`bridge.fhir_dates`: microseconds, UTC, half-open; a
  Period is one range, start to end).  ``_lastUpdated`` needs no rows: ``resource_current`` holds
  it in the one form this bridge writes, which orders as time does.

:func:`extract` is pure and yields a date as the text ``low/high``, so the rows computed before a
transaction (``IndexEntry.tokens``) stay string pairs; :func:`index_many` writes them to
``search_dates``.  A date the resource holds that is not a FHIR date is not indexed (the resource
is still stored; it is not found by that parameter).  ``_history`` reads ``resource_versions``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from anchoring.db import Cursor

from .fhir_dates import DateRange, DateValueError, value_range

log = logging.getLogger("fhir_bridge.search_index")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resource_current (
    res_type TEXT NOT NULL,
    res_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    patient TEXT,
    PRIMARY KEY (res_type, res_id)
);
CREATE INDEX IF NOT EXISTS resource_current_patient ON resource_current (patient, res_type);
CREATE INDEX IF NOT EXISTS resource_current_updated ON resource_current (res_type, last_updated);
CREATE TABLE IF NOT EXISTS search_index_state (name TEXT PRIMARY KEY, value TEXT NOT NULL)
"""

# PostgreSQL.  search_dates: the (type, id, param, low, high) index answers the correlated EXISTS
# per resource and the deletes, and is unique so a row cannot be indexed twice; the (type, param,
# low, high) one lets PostgreSQL turn a selective range into a semi-join (seen with EXPLAIN)
_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS search_tokens (
    res_type TEXT NOT NULL,
    res_id TEXT NOT NULL,
    param TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS search_tokens_lookup ON search_tokens (res_type, param, value);
CREATE INDEX IF NOT EXISTS search_tokens_resource ON search_tokens (res_type, res_id);
CREATE TABLE IF NOT EXISTS search_dates (
    res_type TEXT NOT NULL,
    res_id TEXT NOT NULL,
    param TEXT NOT NULL,
    low BIGINT NOT NULL,
    high BIGINT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS search_dates_resource ON search_dates (res_type, res_id, param, low, high);
CREATE INDEX IF NOT EXISTS search_dates_lookup ON search_dates (res_type, param, low, high)
"""

# SQLite: each table is one b-tree, WITHOUT ROWID and keyed by resource first, instead of a rowid
# table and two indexes: a row costs one b-tree insert, not three, and a resource's rows share a
# page.  SQLite's plans only ever probe per resource (search walks resource_current and tests each
# row with a correlated EXISTS; the deletes are per resource), and the key answers those probes
# exactly; with a (type, param, value) index the planner probed by value and then read every row
# holding that value (EXPLAIN QUERY PLAN).  The keys hold: extract yields a resource's rows once.
# table -> (columns in key order, CREATE TABLE with {name})
_SQLITE_TABLES = {
    "search_tokens": (
        "res_type, res_id, param, value",
        "CREATE TABLE {name} (res_type TEXT NOT NULL, res_id TEXT NOT NULL, param TEXT NOT NULL, "
        "value TEXT NOT NULL, PRIMARY KEY (res_type, res_id, param, value)) WITHOUT ROWID",
    ),
    "search_dates": (
        "res_type, res_id, param, low, high",
        "CREATE TABLE {name} (res_type TEXT NOT NULL, res_id TEXT NOT NULL, param TEXT NOT NULL, "
        "low BIGINT NOT NULL, high BIGINT NOT NULL, PRIMARY KEY (res_type, res_id, param, low, high)) WITHOUT ROWID",
    ),
}

# Search parameters per resource type: name -> (kind, element paths).  Paths are dotted; a list
# along the way is walked item by item; a date path ends at a date, dateTime, instant or Period.
# Names follow FHIR R4's search parameters.
_CLINICAL_DATE = {
    "Observation": ["effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"],
    "Condition": ["onsetDateTime", "onsetPeriod", "recordedDate"],
    "Encounter": ["period"],
    "Immunization": ["occurrenceDateTime"],
    "MedicationRequest": ["authoredOn"],
    "AllergyIntolerance": ["recordedDate", "onsetDateTime"],
    "DiagnosticReport": ["effectiveDateTime", "effectivePeriod", "issued"],
    "DocumentReference": ["date"],
}
_CLINICAL_CODE = {
    "Observation": ["code"], "Condition": ["code"], "Encounter": ["type"], "Immunization": ["vaccineCode"],
    "MedicationRequest": ["medicationCodeableConcept"], "AllergyIntolerance": ["code"],
    "DiagnosticReport": ["code"], "DocumentReference": ["type"],
}
_CLINICAL_CATEGORY = {
    "Observation": ["category"], "Condition": ["category"], "Encounter": ["class"], "Immunization": [],
    "MedicationRequest": ["category"], "AllergyIntolerance": ["category"], "DiagnosticReport": ["category"],
    "DocumentReference": ["category"],
}
_CLINICAL_STATUS = {
    "Condition": ["clinicalStatus"], "AllergyIntolerance": ["clinicalStatus"],
}

PARAMETERS: dict[str, dict[str, tuple[str, list[str]]]] = {
    "Patient": {
        "identifier": ("token", ["identifier"]),
        "name": ("string", ["name.family", "name.given", "name.text", "name.prefix", "name.suffix"]),
        "family": ("string", ["name.family"]),
        "given": ("string", ["name.given"]),
        "birthdate": ("date", ["birthDate"]),
        "gender": ("token", ["gender"]),
    },
    "Consent": {
        "patient": ("reference", ["patient"]),
        "status": ("token", ["status"]),
        "category": ("token", ["category"]),
        "date": ("date", ["dateTime"]),
    },
    "AuditEvent": {
        "patient": ("reference", ["entity.what"]),
        "date": ("date", ["recorded"]),
        "agent": ("reference", ["agent.who"]),
        "entity": ("reference", ["entity.what"]),
        "outcome": ("token", ["outcome"]),
    },
}
for _type in _CLINICAL_DATE:
    PARAMETERS[_type] = {
        "patient": ("reference", ["subject", "patient"]),
        "code": ("token", _CLINICAL_CODE[_type]),
        "date": ("date", _CLINICAL_DATE[_type]),
        "status": ("token", _CLINICAL_STATUS.get(_type, []) + ["status"]),
    }
    if _CLINICAL_CATEGORY[_type]:
        PARAMETERS[_type]["category"] = ("token", _CLINICAL_CATEGORY[_type])

#: types whose resources belong to a patient's compartment, and the elements naming the patient
COMPARTMENT = {t: ["subject", "patient"] for t in _CLINICAL_DATE} | {"Consent": ["patient"]}

#: (type, parameter) of the date parameters: their rows go to ``search_dates``
DATE_PARAMETERS = frozenset((t, name) for t, params in PARAMETERS.items()
                            for name, (kind, _) in params.items() if kind == "date")
LAST_UPDATED = "_lastUpdated"
_BACKFILL_CHUNK = 500
_PROGRESS_EVERY = 50_000  # resources between progress lines of a backfill


DATES_STATE = ("dates", "ranges")  # search_index_state row: dates are indexed in search_dates
WITHOUT_ROWID_STATE = ("sqlite_tables", "without rowid")  # row: SQLite's search tables are WITHOUT ROWID


def ensure_schema(cur: Cursor) -> None:
    """Create the tables; a database indexed before ``search_dates`` existed gets its dates indexed
    (an empty index is filled by FhirData's rebuild instead), and a SQLite one written before the
    search tables were WITHOUT ROWID gets them rewritten, each once and recorded."""
    sqlite = isinstance(cur, sqlite3.Cursor)  # PostgreSQL's cursor is bridge.db's
    for statement in (_SCHEMA + ";" + ("" if sqlite else _PG_SCHEMA)).split(";"):
        cur.execute(statement)
    if sqlite:
        for name, (_, table) in _SQLITE_TABLES.items():
            cur.execute(table.format(name=f"IF NOT EXISTS {name}"))
        if not _done(cur, WITHOUT_ROWID_STATE):
            _rewrite_without_rowid(cur)
            cur.execute("INSERT INTO search_index_state (name, value) VALUES (?, ?)", WITHOUT_ROWID_STATE)
    if not _done(cur, DATES_STATE):
        cur.execute("SELECT 1 FROM resource_current LIMIT 1")
        if cur.fetchone() is not None:
            log.warning("indexing the dates of every current resource as ranges (once, after an upgrade)")
            log.warning("dates indexed for %d resources", backfill_dates(cur))
        cur.execute("INSERT INTO search_index_state (name, value) VALUES (?, ?)", DATES_STATE)


def _done(cur: Cursor, state: tuple[str, str]) -> bool:
    cur.execute("SELECT 1 FROM search_index_state WHERE name = ?", (state[0],))
    return cur.fetchone() is not None


def _rewrite_without_rowid(cur: Cursor) -> None:
    """Copy a SQLite store's search tables written before they were WITHOUT ROWID into the new form
    (in the caller's transaction: all or nothing); a new store has them already."""
    for name, (columns, table) in _SQLITE_TABLES.items():
        cur.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        if "WITHOUT ROWID" in cur.fetchone()[0].upper():
            continue
        log.warning("rewriting %s as a WITHOUT ROWID table (once, after an upgrade)", name)
        cur.execute(table.format(name=f"{name}_new"))
        # OR IGNORE: the old search_tokens had no key, so a row could be there twice (EXISTS never saw
        # it); in key order (the columns are), so the new b-tree is appended to, not written at random
        cur.execute(f"INSERT OR IGNORE INTO {name}_new ({columns}) SELECT {columns} FROM {name} ORDER BY {columns}")
        cur.execute(f"DROP TABLE {name}")  # and its indexes
        cur.execute(f"ALTER TABLE {name}_new RENAME TO {name}")


def backfill_dates(cur: Cursor) -> int:
    """Index the date rows of every current version from its stored content, and drop the date
    rows ``search_tokens`` held as text before ``search_dates`` existed; returns how many resources.
    Read in chunks by key, so a large store is not loaded at once."""
    cur.executemany("DELETE FROM search_tokens WHERE res_type = ? AND param = ?", sorted(DATE_PARAMETERS))
    cur.execute("DELETE FROM search_dates")  # whatever an interrupted backfill left: all is read again
    count, after = 0, ("", "")
    while True:
        cur.execute(
            "SELECT c.res_type, c.res_id, v.content FROM resource_current c "
            "JOIN resource_versions v ON v.res_type = c.res_type AND v.res_id = c.res_id AND v.version = c.version "
            "WHERE c.res_type > ? OR (c.res_type = ? AND c.res_id > ?) ORDER BY c.res_type, c.res_id LIMIT ?",
            (after[0], after[0], after[1], _BACKFILL_CHUNK),
        )
        chunk = cur.fetchall()
        if not chunk:
            return count
        rows = [row for res_type, res_id, content in chunk
                for row in _date_rows(res_type, res_id, extract(json.loads(bytes(content))))]
        if rows:
            cur.executemany(_INSERT_DATE, rows)
        count += len(chunk)
        after = (chunk[-1][0], chunk[-1][1])
        if count % _PROGRESS_EVERY < len(chunk):
            log.warning("dates indexed for %d resources so far", count)


def _collect(value: Any, path: tuple[str, ...], at: int, out: list[Any]) -> None:
    """Append the values at ``path[at:]`` below ``value``, walking lists item by item."""
    if isinstance(value, list):
        for item in value:
            _collect(item, path, at, out)
    elif at == len(path):
        if value is not None:
            out.append(value)
    elif isinstance(value, dict):
        _collect(value.get(path[at]), path, at + 1, out)


def values_at(resource: dict, path: str) -> list[Any]:
    out: list[Any] = []
    _collect(resource, tuple(path.split(".")), 0, out)
    return out


def _reference(value: Any) -> str | None:
    ref = value.get("reference") if isinstance(value, dict) else None
    return ref if isinstance(ref, str) and ref.count("/") == 1 else None


def patient_of(resource: dict) -> str | None:
    """``Patient/<id>`` whose compartment holds the resource, or None."""
    res_type = resource.get("resourceType")
    if res_type == "Patient":
        return f"Patient/{resource.get('id')}"
    if res_type == "AuditEvent":
        return None  # audit events are found through their own ``patient`` parameter
    for path in COMPARTMENT.get(res_type or "", []):
        for value in values_at(resource, path):
            ref = _reference(value)
            if ref and ref.startswith("Patient/"):
                return ref
    return None


# extract's plan per type: the PARAMETERS paths merged into a tree by segment, so a shared prefix
# (Patient's name.*) is walked once and a path two parameters share (name.family) is read once.  An
# entry is (key, fn, arg): the value under key, when not None, goes to fn(value, arg, add).  fn is a
# kind's adder (arg: the parameter names) or _descend (arg: a _Node).  Lists are walked item by item
# at every step, as _collect does; a value not indexable by its kind adds nothing.
_Entry = tuple[str, Callable[[Any, Any, Callable[[tuple[str, str]], None]], None], Any]


class _Node(NamedTuple):
    adders: tuple[tuple[Callable[..., None], tuple[str, ...]], ...]  # the paths ending here
    children: tuple[_Entry, ...]  # the paths going on


def _descend(value: Any, node: _Node, add: Callable[[tuple[str, str]], None]) -> None:
    if isinstance(value, list):
        for item in value:
            _descend(item, node, add)
        return
    adders, children = node
    for adder, names in adders:
        adder(value, names, add)
    if children and isinstance(value, dict):
        for key, fn, arg in children:
            child = value.get(key)
            if child is not None:
                fn(child, arg, add)


def _add_tokens(value: Any, names: tuple[str, ...], add: Callable[[tuple[str, str]], None]) -> None:
    """Index forms of a code, Coding, CodeableConcept or Identifier: ``code`` and ``system|code``."""
    if isinstance(value, str):
        for name in names:
            add((name, value))
    elif isinstance(value, dict):
        _add_coded(value, names, add)
    elif isinstance(value, list):
        for item in value:  # mostly Identifiers or CodeableConcepts: one call fewer each
            if isinstance(item, dict):
                _add_coded(item, names, add)
            else:
                _add_tokens(item, names, add)


def _add_coded(value: dict, names: tuple[str, ...], add: Callable[[tuple[str, str]], None]) -> None:
    if "coding" in value:
        for coding in value["coding"] or ():  # a coding's own lists are not walked
            if isinstance(coding, str):
                for name in names:
                    add((name, coding))
            elif isinstance(coding, dict):
                _add_coded(coding, names, add)
        return
    code = value["code"] if "code" in value else value.get("value")
    if isinstance(code, str):
        system_code = f"{value.get('system', '')}|{code}"
        for name in names:
            add((name, code))
            add((name, system_code))


def _add_strings(value: Any, names: tuple[str, ...], add: Callable[[tuple[str, str]], None]) -> None:
    if isinstance(value, str):
        lowered = value.lower()
        for name in names:
            add((name, lowered))
    elif isinstance(value, list):
        for item in value:  # mostly strings (given, prefix): one call fewer each
            if isinstance(item, str):
                lowered = item.lower()
                for name in names:
                    add((name, lowered))
            else:
                _add_strings(item, names, add)


def _add_references(value: Any, names: tuple[str, ...], add: Callable[[tuple[str, str]], None]) -> None:
    if isinstance(value, dict):
        ref = value.get("reference")  # as _reference
        if isinstance(ref, str) and ref.count("/") == 1:
            for name in names:
                add((name, ref))
    elif isinstance(value, list):
        for item in value:
            _add_references(item, names, add)


def _add_dates(value: Any, names: tuple[str, ...], add: Callable[[tuple[str, str]], None]) -> None:
    if isinstance(value, list):
        for item in value:
            _add_dates(item, names, add)
        return
    text = _date_text(value)
    if text is not None:
        for name in names:
            add((name, text))


_ADDERS = (("token", _add_tokens), ("string", _add_strings), ("date", _add_dates), ("reference", _add_references))

# date_token(value_range(v)), None for what is not a date, by date text or by a Period's (start, end)
# when both are text or missing (all period_range reads).  Bounded: feed times are mostly new.
_DATE_TEXTS: dict[Any, str | None] = {}
_DATE_TEXTS_MAX = 4096
_UNKNOWN = object()


def _date_text(value: Any) -> str | None:
    key: Any = None
    if type(value) is str:  # exact types: a subclass could compare equal to a cached key yet parse otherwise
        key = value
    elif type(value) is dict:
        start, end = value.get("start"), value.get("end")
        if (start is None or type(start) is str) and (end is None or type(end) is str):
            key = (start, end)
    if key is not None:
        text = _DATE_TEXTS.get(key, _UNKNOWN)
        if text is not _UNKNOWN:
            return text
    try:
        text = date_token(value_range(value))
    except DateValueError:
        text = None  # not a date: the resource cannot be found by it (module docstring)
    if key is not None:
        if len(_DATE_TEXTS) >= _DATE_TEXTS_MAX:
            _DATE_TEXTS.clear()
        _DATE_TEXTS[key] = text
    return text


def _compiled(res_type: str) -> tuple[_Entry, ...]:
    """extract's plan for a type, made from PARAMETERS at first use (whoever changes PARAMETERS
    afterwards clears ``_COMPILED``)."""
    found = _COMPILED.get(res_type)
    if found is None:
        tree: dict[str, Any] = {}  # segment -> [adder -> names, subtree]
        for name, (kind, paths) in PARAMETERS.get(res_type, {}).items():
            adder = next((a for k, a in _ADDERS if k == kind), None)
            if adder is None:
                continue  # a kind extract does not index
            for path in paths:
                *parents, last = path.split(".")
                level = tree
                for segment in parents:
                    level = level.setdefault(segment, [{}, {}])[1]
                names = level.setdefault(last, [{}, {}])[0].setdefault(adder, {})
                names[name] = None
        found = _COMPILED[res_type] = _entries(tree)
    return found


def _entries(tree: dict[str, Any]) -> tuple[_Entry, ...]:
    out: list[_Entry] = []
    for key, (adders, subtree) in tree.items():
        if len(adders) == 1 and not subtree:
            [(adder, names)] = adders.items()
            out.append((key, adder, tuple(names)))
        else:
            out.append((key, _descend, _Node(tuple((a, tuple(n)) for a, n in adders.items()), _entries(subtree))))
    return tuple(out)


_COMPILED: dict[str, tuple[_Entry, ...]] = {}


def extract(resource: dict) -> list[tuple[str, str]]:
    """(parameter, value) rows for a resource version; pure."""
    plan = _compiled(resource.get("resourceType", ""))
    if not isinstance(resource, dict):
        return []  # only a dict has elements (as values_at reads them)
    rows: set[tuple[str, str]] = set()
    add = rows.add
    get = resource.get
    for key, fn, arg in plan:
        value = get(key)
        if value is not None:
            fn(value, arg, add)
    return sorted(rows)


def index_version(cur: Cursor, res_type: str, res_id: str, version: int, last_updated: str, content: bytes) -> None:
    """Make ``version`` the indexed current version (called in the transaction that stores it)."""
    resource = json.loads(content)
    index_many(cur, [IndexEntry(res_type, res_id, version, last_updated, patient_of(resource),
                                tuple(extract(resource)), True)])


class IndexEntry(NamedTuple):
    """A resource's current version as the index holds it."""

    res_type: str
    res_id: str
    version: int
    last_updated: str
    patient: str | None
    tokens: tuple[tuple[str, str], ...]
    replaces: bool  # the resource may have rows already (False: new, nothing to clear)


def date_token(found: DateRange) -> str:
    """A date row as :func:`extract` yields it: ``low/high``."""
    return f"{found.low}/{found.high}"


_INSERT_TOKEN = "INSERT INTO search_tokens (res_type, res_id, param, value) VALUES (?, ?, ?, ?)"
_INSERT_DATE = "INSERT INTO search_dates (res_type, res_id, param, low, high) VALUES (?, ?, ?, ?, ?)"


def _token_rows(res_type: str, res_id: str, rows: Iterable[tuple[str, str]]) -> list[tuple[str, str, str, str]]:
    return [(res_type, res_id, p, v) for p, v in rows if (res_type, p) not in DATE_PARAMETERS]


def _date_rows(res_type: str, res_id: str, rows: Iterable[tuple[str, str]]) -> list[tuple[str, str, str, int, int]]:
    """``search_dates`` rows: the date parameters' ``low/high`` tokens."""
    out = []
    for p, v in rows:
        if (res_type, p) in DATE_PARAMETERS:
            low, _, high = v.partition("/")
            out.append((res_type, res_id, p, int(low), int(high)))
    return out


def index_many(cur: Cursor, entries: list[IndexEntry]) -> None:
    """Make each entry's version the indexed current one (each resource once), its ``patient`` and
    :func:`extract` rows computed beforehand, with one statement per kind of row."""
    cleared = [(e.res_type, e.res_id) for e in entries if e.replaces]
    if cleared:
        cur.executemany("DELETE FROM search_tokens WHERE res_type = ? AND res_id = ?", cleared)
        cur.executemany("DELETE FROM search_dates WHERE res_type = ? AND res_id = ?", cleared)
    cur.executemany(
        "INSERT INTO resource_current (res_type, res_id, version, last_updated, patient) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (res_type, res_id) DO UPDATE SET version = excluded.version, "
        "last_updated = excluded.last_updated, patient = excluded.patient",
        [(e.res_type, e.res_id, e.version, e.last_updated, e.patient) for e in entries],
    )
    tokens = [row for e in entries for row in _token_rows(e.res_type, e.res_id, e.tokens)]
    if tokens:
        cur.executemany(_INSERT_TOKEN, tokens)
    dates = [row for e in entries for row in _date_rows(e.res_type, e.res_id, e.tokens)]
    if dates:
        cur.executemany(_INSERT_DATE, dates)


def rebuild(cur: Cursor, versions: Iterable[tuple[str, str, int, str, bytes]]) -> int:
    """Index the given current versions (type, id, version, lastUpdated, content); returns how many."""
    count = 0
    for res_type, res_id, version, last_updated, content in versions:
        index_version(cur, res_type, res_id, version, last_updated, content)
        count += 1
    return count
