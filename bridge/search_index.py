"""The search-parameter index: current versions only, filled in the transaction that stores a version.

Three tables:

* ``resource_current``: one row per resource: its serial (numbered as resources are first stored),
  current version, ``meta.lastUpdated`` and the patient whose compartment it is in
  (``Patient/<id>``; a Patient is in its own).
* ``search_tokens``: (serial, parameter, value) rows for the current version.  Tokens are kept
  twice, ``code`` and ``system|code``; strings lower-cased.
* ``search_dates``: (serial, parameter, low, high) rows: each date parameter's value as the
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

from . import key_values
from .fhir_dates import DateRange, DateValueError, value_range

log = logging.getLogger("fhir_bridge.search_index")

# Every resource has a serial, given in the order resources are first stored, and the search rows
# are keyed by it rather than by (type, id).  Ids are keyed hashes, so rows keyed by id land on
# pages all over the b-tree and each commit rewrites one page per resource in each table (about 15
# of the 41 pages an ingested message wrote, measured from the WAL); rows keyed by serial are
# appended where the last commit left off, and a resource's rows still share a page.  On SQLite
# the serial is resource_current's INTEGER PRIMARY KEY (an explicit one: VACUUM keeps it, where it
# may renumber a bare rowid); on PostgreSQL a BIGSERIAL column.
_CURRENT = {
    "sqlite": """
CREATE TABLE IF NOT EXISTS resource_current (
    serial INTEGER PRIMARY KEY,
    res_type TEXT NOT NULL,
    res_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    patient TEXT,
    UNIQUE (res_type, res_id)
)""",
    "postgresql": """
CREATE TABLE IF NOT EXISTS resource_current (
    res_type TEXT NOT NULL,
    res_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    patient TEXT,
    serial BIGSERIAL NOT NULL,
    PRIMARY KEY (res_type, res_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS resource_current_serial ON resource_current (serial)""",
}

# SQLite: each search table is one WITHOUT ROWID b-tree keyed by serial first: a row costs one
# b-tree insert, and SQLite's plans only ever probe per resource (search walks resource_current
# and tests each row with a correlated EXISTS; the deletes are per resource), which the key answers
# exactly; with a (param, value) index the planner probed by value and then read every row holding
# that value (EXPLAIN QUERY PLAN).  The keys hold: extract yields a resource's rows once.
# PostgreSQL: the same keys, and a (param, value) / (param, low, high) index with which it turns a
# selective condition into a semi-join (seen with EXPLAIN).
_SEARCH_TABLES = {
    "sqlite": """
CREATE TABLE IF NOT EXISTS search_tokens (
    serial INTEGER NOT NULL, param TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (serial, param, value)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS search_dates (
    serial INTEGER NOT NULL, param TEXT NOT NULL, low INTEGER NOT NULL, high INTEGER NOT NULL,
    PRIMARY KEY (serial, param, low, high)
) WITHOUT ROWID""",
    "postgresql": """
CREATE TABLE IF NOT EXISTS search_tokens (
    serial BIGINT NOT NULL, param TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (serial, param, value)
);
CREATE INDEX IF NOT EXISTS search_tokens_lookup ON search_tokens (param, value);
CREATE TABLE IF NOT EXISTS search_dates (
    serial BIGINT NOT NULL, param TEXT NOT NULL, low BIGINT NOT NULL, high BIGINT NOT NULL,
    PRIMARY KEY (serial, param, low, high)
);
CREATE INDEX IF NOT EXISTS search_dates_lookup ON search_dates (param, low, high)""",
}

_CURRENT_INDEXES = """
CREATE INDEX IF NOT EXISTS resource_current_patient ON resource_current (patient, res_type);
CREATE INDEX IF NOT EXISTS resource_current_updated ON resource_current (res_type, last_updated)
"""
SEARCH_TABLES = ("search_tokens", "search_dates")

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
_REINDEX_CHUNK = 500  # resources read at a time when the index is made again
_PROGRESS_EVERY = 50_000  # resources between progress lines of a reindex


def ensure_schema(cur: Cursor) -> None:
    """Create the tables.  A store written before resources had serials gets them, and one whose
    search rows were keyed otherwise (by type and id, or before ``search_dates`` existed) has its
    index made again from the stored current versions: once, in the caller's transaction."""
    dialect = "sqlite" if isinstance(cur, sqlite3.Cursor) else "postgresql"  # PostgreSQL's cursor is bridge.db's
    existing = _columns(cur, dialect, "resource_current")
    # a missing table counts as one keyed otherwise: a store from before search_dates had only tokens
    rebuild = bool(existing) and any("serial" not in _columns(cur, dialect, t) for t in SEARCH_TABLES)
    if existing and "serial" not in existing:
        _give_serials(cur, dialect)
    if rebuild:
        log.warning("rebuilding the search index keyed by resource serial (once, after an upgrade)")
        for table in SEARCH_TABLES:
            cur.execute(f"DROP TABLE IF EXISTS {table}")  # and its indexes
    for statement in (_CURRENT[dialect] + ";" + _CURRENT_INDEXES + ";" + _SEARCH_TABLES[dialect]).split(";"):
        cur.execute(statement)
    if rebuild:
        log.warning("search index rebuilt for %d resources", reindex(cur))


def _columns(cur: Cursor, dialect: str, table: str) -> set[str]:
    """The columns ``table`` has (none if it does not exist)."""
    if dialect == "sqlite":
        cur.execute(f"SELECT name FROM pragma_table_info('{table}')")
    else:
        cur.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                    "AND table_name = ?", (table,))
    return {row[0] for row in cur.fetchall()}


def _give_serials(cur: Cursor, dialect: str) -> None:
    """Give each resource of a store written before serials existed its serial."""
    log.warning("numbering the stored resources (once, after an upgrade)")
    if dialect == "postgresql":
        cur.execute("ALTER TABLE resource_current ADD COLUMN serial BIGSERIAL NOT NULL")
        return
    # SQLite adds no INTEGER PRIMARY KEY to a table: a new one is filled (its indexes go with the old)
    columns = "res_type, res_id, version, last_updated, patient"
    cur.execute("ALTER TABLE resource_current RENAME TO resource_current_old")
    cur.execute(_CURRENT["sqlite"])
    cur.execute(f"INSERT INTO resource_current ({columns}) SELECT {columns} FROM resource_current_old ORDER BY rowid")
    cur.execute("DROP TABLE resource_current_old")


def reindex(cur: Cursor) -> int:
    """Make the search rows of every current version again from its stored content; returns how many
    resources.  Read in chunks by serial, so a large store is not loaded at once."""
    for table in SEARCH_TABLES:
        cur.execute(f"DELETE FROM {table}")
    count, after = 0, 0
    while True:
        cur.execute(
            "SELECT c.serial, c.res_type, v.content FROM resource_current c JOIN resource_versions v "
            "ON v.res_type = c.res_type AND v.res_id = c.res_id AND v.version = c.version "
            "WHERE c.serial > ? ORDER BY c.serial LIMIT ?",
            (after, _REINDEX_CHUNK),
        )
        chunk = cur.fetchall()
        if not chunk:
            return count
        _insert_rows(cur, [(serial, res_type, extract(json.loads(bytes(content)))) for serial, res_type, content in chunk])
        count += len(chunk)
        after = chunk[-1][0]
        if count % _PROGRESS_EVERY < len(chunk):
            log.warning("search index rebuilt for %d resources so far", count)


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


_INSERT_TOKEN = "INSERT INTO search_tokens (serial, param, value) VALUES (?, ?, ?)"
_INSERT_DATE = "INSERT INTO search_dates (serial, param, low, high) VALUES (?, ?, ?, ?)"


def _insert_rows(cur: Cursor, resources: list[tuple[int, str, Iterable[tuple[str, str]]]]) -> None:
    """Write the :func:`extract` rows of each (serial, type, rows): dates (``low/high``) to
    ``search_dates``, the rest to ``search_tokens``; one statement per table."""
    tokens, dates = [], []
    for serial, res_type, rows in resources:
        for p, v in rows:
            if (res_type, p) in DATE_PARAMETERS:
                low, _, high = v.partition("/")
                dates.append((serial, p, int(low), int(high)))
            else:
                tokens.append((serial, p, v))
    if tokens:
        cur.executemany(_INSERT_TOKEN, tokens)
    if dates:
        cur.executemany(_INSERT_DATE, dates)


def _serials(cur: Cursor, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The serial of each (type, id) that resource_current holds."""
    found: dict[tuple[str, str], int] = {}
    for pairs, params in key_values.chunks(keys):
        cur.execute(f"WITH k(t, i) AS (VALUES {pairs}) SELECT c.res_type, c.res_id, c.serial "
                    "FROM k JOIN resource_current c ON c.res_type = k.t AND c.res_id = k.i", params)
        for res_type, res_id, serial in cur.fetchall():
            found[(res_type, res_id)] = int(serial)
    return found


def index_many(cur: Cursor, entries: list[IndexEntry]) -> None:
    """Make each entry's version the indexed current one (each resource once), its ``patient`` and
    :func:`extract` rows computed beforehand, with one statement per kind of row."""
    cleared = [(e.res_type, e.res_id) for e in entries if e.replaces]
    if cleared:
        for table in SEARCH_TABLES:
            cur.executemany(f"DELETE FROM {table} WHERE serial = "
                            "(SELECT serial FROM resource_current WHERE res_type = ? AND res_id = ?)", cleared)
    cur.executemany(
        "INSERT INTO resource_current (res_type, res_id, version, last_updated, patient) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (res_type, res_id) DO UPDATE SET version = excluded.version, "
        "last_updated = excluded.last_updated, patient = excluded.patient",
        [(e.res_type, e.res_id, e.version, e.last_updated, e.patient) for e in entries],
    )
    numbered = _serials(cur, [(e.res_type, e.res_id) for e in entries])
    _insert_rows(cur, [(numbered[e.res_type, e.res_id], e.res_type, e.tokens) for e in entries])


def rebuild(cur: Cursor, versions: Iterable[tuple[str, str, int, str, bytes]]) -> int:
    """Index the given current versions (type, id, version, lastUpdated, content); returns how many."""
    count = 0
    for res_type, res_id, version, last_updated, content in versions:
        index_version(cur, res_type, res_id, version, last_updated, content)
        count += 1
    return count
