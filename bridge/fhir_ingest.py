"""FHIR resources arriving as FHIR (pulled from a source, or pushed in a Bundle): validate, version, log.

Every resource is validated as FHIR R4 (``fhir.resources`` R4B models, see :mod:`bridge.validation`).
A valid one goes to :class:`bridge.store.ResourceStore` (a new version and its log leaf in the same
transaction; the same content again creates none).  An invalid one is never dropped: it is kept in
``fhir_rejects`` exactly as received, with the OperationOutcome that says why, once per distinct
content, until a later valid version of the same resource resolves it.

:func:`validation_outcome` is pure; :class:`FhirIngest` writes inside the caller's transaction.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from anchoring.db import Cursor, Database

from .fhir_dates import now_instant
from .store import ResourceStore, VersionRef, canonical_resource
from .validation import problems

MAX_ISSUES = 20


_SCHEMA = """
CREATE TABLE IF NOT EXISTS fhir_rejects (
    source TEXT NOT NULL,
    res_type TEXT NOT NULL,
    source_id TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    received_at TEXT NOT NULL,
    content TEXT NOT NULL,
    outcome TEXT NOT NULL,
    resolved_at TEXT,
    PRIMARY KEY (source, res_type, source_id, content_sha256)
);
CREATE INDEX IF NOT EXISTS fhir_rejects_open ON fhir_rejects (source, resolved_at)
"""


def outcome(issues: list[dict]) -> dict:
    return {"resourceType": "OperationOutcome", "issue": issues}


def issue(code: str, diagnostics: str, expression: str | None = None, severity: str = "error") -> dict:
    found = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        found["expression"] = [expression]
    return found


def validation_outcome(resource: Any) -> dict | None:
    """None if ``resource`` is valid FHIR R4, else an OperationOutcome naming each invalid path."""
    found = problems(resource)
    if not found:
        return None
    issues = [issue(p.code, p.message, p.path or None) for p in found[:MAX_ISSUES]]
    if len(found) > MAX_ISSUES:
        issues.append(issue("too-costly", f"{len(found) - MAX_ISSUES} more errors not listed", severity="warning"))
    return outcome(issues)


def content_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class IngestCounts:
    received: int = 0
    created: int = 0  # new versions stored (and logged)
    unchanged: int = 0  # same content as the latest version: no new version
    invalid: int = 0  # kept in fhir_rejects with their OperationOutcome
    versions: list[str] = field(default_factory=list)  # Type/id/_history/n of the new versions

    def add(self, other: IngestCounts) -> None:
        self.received += other.received
        self.created += other.created
        self.unchanged += other.unchanged
        self.invalid += other.invalid
        self.versions.extend(other.versions)

    def as_dict(self) -> dict:
        return {"received": self.received, "created": self.created, "unchanged": self.unchanged,
                "invalid": self.invalid}


@dataclass(frozen=True)
class Reject:
    source: str
    res_type: str
    source_id: str
    received_at: str
    content: str
    outcome: dict
    resolved_at: str | None

    def as_dict(self) -> dict:
        return {"source": self.source, "resourceType": self.res_type, "id": self.source_id,
                "received_at": self.received_at, "resolved_at": self.resolved_at, "outcome": self.outcome}


class FhirIngest:
    """Validate and store FHIR resources from one ``source`` label (``fhir:ehr``, ``push:client-1``)."""

    def __init__(self, db: Database, store: ResourceStore | None = None) -> None:
        self.db = db
        self.store = store or ResourceStore(db)

    def ensure_schema(self) -> None:
        self.store.ensure_schema()
        with self.db.transaction(write=True) as cur:
            for statement in _SCHEMA.split(";"):
                cur.execute(statement)

    def put(self, cur: Cursor, source: str, resource: dict, counts: IngestCounts, when: str | None = None) -> str | None:
        """Store one valid resource; returns its ``Type/id/_history/n``."""
        prepared = canonical_resource(resource)
        ref = self.store.put_canonical(cur, prepared, when or now_instant())
        counts.received += 1
        if ref.created:
            counts.created += 1
            counts.versions.append(ref.reference)
        else:
            counts.unchanged += 1
        self.put_done(cur, source, ref)
        return ref.reference

    @staticmethod
    def put_done(cur: Cursor, source: str, ref: VersionRef) -> None:
        """A valid version of a resource resolves what was rejected of it before."""
        cur.execute("UPDATE fhir_rejects SET resolved_at = ? WHERE source = ? AND res_type = ? AND source_id = ? "
                    "AND resolved_at IS NULL", (now_instant(), source, ref.res_type, ref.res_id))

    def reject(self, cur: Cursor, source: str, res_type: str, source_id: str, content: str, why: dict,
               counts: IngestCounts) -> None:
        """Keep an invalid resource as received, with its OperationOutcome (once per distinct content)."""
        counts.received += 1
        counts.invalid += 1
        cur.execute(
            "INSERT INTO fhir_rejects (source, res_type, source_id, content_sha256, received_at, content, outcome) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (source, res_type or "", source_id or "", content_sha256(content), now_instant(), content,
             json.dumps(why, separators=(",", ":"))),
        )

    def rejects(self, source: str | None = None, include_resolved: bool = False, limit: int = 100) -> list[Reject]:
        sql = "SELECT source, res_type, source_id, received_at, content, outcome, resolved_at FROM fhir_rejects"
        where, params = [], []
        if source is not None:
            where.append("source = ?")
            params.append(source)
        if not include_resolved:
            where.append("resolved_at IS NULL")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY received_at, res_type, source_id LIMIT ?"
        params.append(limit)
        with self.db.transaction() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall()
        return [Reject(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6]) for r in rows]

    def count_rejects(self, source: str) -> int:
        with self.db.transaction() as cur:
            cur.execute("SELECT COUNT(*) FROM fhir_rejects WHERE source = ? AND resolved_at IS NULL", (source,))
            return int(cur.fetchone()[0])
