"""The search-parameter index: current versions only, filled in the transaction that stores a version.

Two tables:

* ``resource_current``: one row per resource: its current version, ``meta.lastUpdated`` and the
  patient whose compartment it is in (``Patient/<id>``; a Patient is in its own).
* ``search_tokens``: (type, id, parameter, value) rows for the current version.  Tokens are kept
  twice, ``code`` and ``system|code``; strings lower-cased; dates as written (ISO 8601), compared
  as text, which orders them correctly at equal precision and time zone.

:func:`extract` is pure; :func:`index_version` writes; ``_history`` reads ``resource_versions``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from anchoring.db import Cursor

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
CREATE TABLE IF NOT EXISTS search_tokens (
    res_type TEXT NOT NULL,
    res_id TEXT NOT NULL,
    param TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS search_tokens_lookup ON search_tokens (res_type, param, value);
CREATE INDEX IF NOT EXISTS search_tokens_resource ON search_tokens (res_type, res_id)
"""

# Search parameters per resource type: name -> (kind, element paths).  Paths are dotted; a list
# along the way is walked item by item.  Names follow FHIR R4's search parameters.
_CLINICAL_DATE = {
    "Observation": ["effectiveDateTime", "effectivePeriod.start", "effectiveInstant", "issued"],
    "Condition": ["onsetDateTime", "onsetPeriod.start", "recordedDate"],
    "Encounter": ["period.start"],
    "Immunization": ["occurrenceDateTime"],
    "MedicationRequest": ["authoredOn"],
    "AllergyIntolerance": ["recordedDate", "onsetDateTime"],
    "DiagnosticReport": ["effectiveDateTime", "effectivePeriod.start", "issued"],
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


def ensure_schema(cur: Cursor) -> None:
    for statement in _SCHEMA.split(";"):
        cur.execute(statement)


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


def _tokens(value: Any) -> Iterator[str]:
    """Index forms of a code, Coding, CodeableConcept or Identifier: ``code`` and ``system|code``."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        if "coding" in value:
            for coding in value.get("coding") or []:
                yield from _tokens(coding)
            return
        code = value.get("code", value.get("value"))
        if isinstance(code, str):
            yield code
            yield f"{value.get('system', '')}|{code}"


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


def _compiled(res_type: str) -> list[tuple[str, str, list[tuple[str, ...]]]]:
    """PARAMETERS of a type with paths split once: (name, kind, paths)."""
    found = _COMPILED.get(res_type)
    if found is None:
        found = [(name, kind, [tuple(p.split(".")) for p in paths])
                 for name, (kind, paths) in PARAMETERS.get(res_type, {}).items()]
        _COMPILED[res_type] = found
    return found


_COMPILED: dict[str, list[tuple[str, str, list[tuple[str, ...]]]]] = {}


def extract(resource: dict) -> list[tuple[str, str]]:
    """(parameter, value) rows for a resource version; pure."""
    rows: set[tuple[str, str]] = set()
    for name, kind, paths in _compiled(resource.get("resourceType", "")):
        values: list[Any] = []
        for path in paths:
            _collect(resource, path, 0, values)
        for value in values:
            if kind == "token":
                rows.update((name, t) for t in _tokens(value))
            elif kind == "string":
                if isinstance(value, str):
                    rows.add((name, value.lower()))
            elif kind == "date":
                if isinstance(value, str):
                    rows.add((name, value))
            elif kind == "reference":
                ref = _reference(value)
                if ref:
                    rows.add((name, ref))
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


def index_many(cur: Cursor, entries: list[IndexEntry]) -> None:
    """Make each entry's version the indexed current one (each resource once), its ``patient`` and
    :func:`extract` rows computed beforehand, with one statement per kind of row."""
    cleared = [(e.res_type, e.res_id) for e in entries if e.replaces]
    if cleared:
        cur.executemany("DELETE FROM search_tokens WHERE res_type = ? AND res_id = ?", cleared)
    cur.executemany(
        "INSERT INTO resource_current (res_type, res_id, version, last_updated, patient) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (res_type, res_id) DO UPDATE SET version = excluded.version, "
        "last_updated = excluded.last_updated, patient = excluded.patient",
        [(e.res_type, e.res_id, e.version, e.last_updated, e.patient) for e in entries],
    )
    params = [(e.res_type, e.res_id, p, v) for e in entries for p, v in e.tokens]
    if params:
        cur.executemany("INSERT INTO search_tokens (res_type, res_id, param, value) VALUES (?, ?, ?, ?)", params)


def index_new(cur: Cursor, res_type: str, res_id: str, last_updated: str, patient: str | None,
              rows: list[tuple[str, str]]) -> None:
    """Index the first version of a resource whose ``patient`` and :func:`extract` rows were computed
    before the transaction (the AuditWriter's batches hold the write lock for less)."""
    cur.execute(
        "INSERT INTO resource_current (res_type, res_id, version, last_updated, patient) VALUES (?, ?, 1, ?, ?)",
        (res_type, res_id, last_updated, patient),
    )
    if rows:
        cur.executemany(
            "INSERT INTO search_tokens (res_type, res_id, param, value) VALUES (?, ?, ?, ?)",
            [(res_type, res_id, p, v) for p, v in rows],
        )


def rebuild(cur: Cursor, versions: Iterable[tuple[str, str, int, str, bytes]]) -> int:
    """Index the given current versions (type, id, version, lastUpdated, content); returns how many."""
    count = 0
    for res_type, res_id, version, last_updated, content in versions:
        index_version(cur, res_type, res_id, version, last_updated, content)
        count += 1
    return count
