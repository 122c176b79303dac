"""Reads behind the FHIR API: versions, search rows, compartments, consents, leaf indices, proofs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from anchoring.checkpoint import format_tlog_proof
from anchoring.db import Database
from anchoring.log import MerkleLog, StoredCheckpoint

from . import search_index
from .store import ResourceStore, StoredVersion

_V = "v.res_type, v.res_id, v.version, v.last_updated, v.content, v.salt, v.sha256, v.queue_id, v.message_id"
_CHUNK = 500


@dataclass(frozen=True)
class Row:
    res_type: str
    res_id: str
    version: int
    patient: str | None
    last_updated: str = ""  # where a search orders by it


@dataclass(frozen=True)
class ConsentVersion:
    res_id: str
    version: int
    sha256: str  # salted: names this stored version in any database


def _version(row: Sequence) -> StoredVersion:
    return StoredVersion(row[0], row[1], int(row[2]), row[3], bytes(row[4]), bytes(row[5]), row[6], int(row[7]),
                         None if row[8] is None else int(row[8]))


def _chunks(items: Sequence, size: int = _CHUNK) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class FhirData:
    def __init__(self, db: Database, log: MerkleLog) -> None:
        self.db, self.log = db, log
        self.store = ResourceStore(db)

    def ensure_schema(self) -> None:
        """Create the store's and the index's tables; index what was stored before the index existed."""
        self.store.ensure_schema()
        with self.db.transaction(write=True) as cur:
            cur.execute("SELECT COUNT(*) FROM resource_current")
            if int(cur.fetchone()[0]) == 0:
                cur.execute(
                    "SELECT v.res_type, v.res_id, v.version, v.last_updated, v.content FROM resource_versions v "
                    "WHERE v.version = (SELECT MAX(w.version) FROM resource_versions w "
                    "WHERE w.res_type = v.res_type AND w.res_id = v.res_id)"
                )
                rows = [(r[0], r[1], int(r[2]), r[3], bytes(r[4])) for r in cur.fetchall()]
                search_index.rebuild(cur, rows)

    # -- resources ---------------------------------------------------------------------------

    def current(self, res_type: str, res_id: str) -> tuple[StoredVersion, str | None] | None:
        """The current version and the patient whose compartment holds it."""
        with self.db.transaction() as cur:
            cur.execute(
                f"SELECT {_V}, c.patient FROM resource_current c JOIN resource_versions v ON v.res_type = c.res_type "
                "AND v.res_id = c.res_id AND v.version = c.version WHERE c.res_type = ? AND c.res_id = ?",
                (res_type, res_id),
            )
            row = cur.fetchone()
        return None if row is None else (_version(row), row[9])

    def version(self, res_type: str, res_id: str, version: int) -> StoredVersion | None:
        return self.store.read(res_type, res_id, version)

    def history(self, res_type: str, res_id: str) -> list[StoredVersion]:
        return list(reversed(self.store.history(res_type, res_id)))  # newest first, as FHIR orders history

    def type_history(self, res_type: str, since: str | None, limit: int) -> list[StoredVersion]:
        sql = f"SELECT {_V} FROM resource_versions v WHERE v.res_type = ?"
        params: list = [res_type]
        if since:
            sql += " AND v.last_updated >= ?"
            params.append(since)
        sql += " ORDER BY v.last_updated DESC, v.res_id, v.version DESC LIMIT ?"
        params.append(limit)
        with self.db.transaction() as cur:
            cur.execute(sql, params)
            return [_version(r) for r in cur.fetchall()]

    def current_versions(self, rows: Sequence[Row]) -> list[StoredVersion]:
        """The versions named by ``rows``, in the rows' order."""
        found: dict[tuple[str, str, int], StoredVersion] = {}
        with self.db.transaction() as cur:
            for res_type in {r.res_type for r in rows}:
                ids = [r.res_id for r in rows if r.res_type == res_type]
                for chunk in _chunks(ids):
                    cur.execute(
                        f"SELECT {_V} FROM resource_current c JOIN resource_versions v ON v.res_type = c.res_type "
                        "AND v.res_id = c.res_id AND v.version = c.version "
                        f"WHERE c.res_type = ? AND c.res_id IN ({', '.join('?' * len(chunk))})",
                        [res_type, *chunk],
                    )
                    for row in cur.fetchall():
                        version = _version(row)
                        found[(version.res_type, version.res_id, version.version)] = version
        return [found[k] for k in ((r.res_type, r.res_id, r.version) for r in rows) if k in found]

    def rows(self, sql: str, params: Sequence) -> list[Row]:
        with self.db.transaction() as cur:
            cur.execute(sql, params)
            return [Row(r[0], r[1], int(r[2]), r[3], *r[4:5]) for r in cur.fetchall()]

    def compartment(self, patient: str, since: str | None) -> list[Row]:
        """Every current resource in the patient's compartment, unordered ($everything sorts its pages)."""
        sql = "SELECT res_type, res_id, version, patient FROM resource_current WHERE patient = ?"
        params: list = [patient]
        if since:
            sql += " AND last_updated >= ?"
            params.append(since)
        return self.rows(sql, params)

    def consent_versions(self, patients: Iterable[str]) -> dict[str, list[ConsentVersion]]:
        """Each patient's current Consents, named by version (no content: see :meth:`consent_contents`)."""
        patients = sorted(set(patients))
        out: dict[str, list[ConsentVersion]] = {p: [] for p in patients}
        with self.db.transaction() as cur:
            for chunk in _chunks(patients):
                cur.execute(
                    "SELECT c.patient, c.res_id, c.version, v.sha256 FROM resource_current c JOIN resource_versions v "
                    "ON v.res_type = c.res_type AND v.res_id = c.res_id AND v.version = c.version "
                    f"WHERE c.res_type = 'Consent' AND c.patient IN ({', '.join('?' * len(chunk))})",
                    list(chunk),
                )
                for patient, res_id, version, sha256 in cur.fetchall():
                    out[patient].append(ConsentVersion(res_id, int(version), sha256))
        return out

    def consent_contents(self, versions: Sequence[ConsentVersion]) -> dict[ConsentVersion, dict]:
        found: dict[ConsentVersion, dict] = {}
        with self.db.transaction() as cur:
            for version in versions:
                cur.execute("SELECT content FROM resource_versions WHERE res_type = 'Consent' AND res_id = ? "
                            "AND version = ?", (version.res_id, version.version))
                row = cur.fetchone()
                if row is not None:
                    found[version] = json.loads(bytes(row[0]))
        return found

    def consents(self, patients: Iterable[str]) -> dict[str, list[dict]]:
        """Current Consent resources per patient, read fresh (a revocation counts on the next request)."""
        current = self.consent_versions(patients)
        contents = self.consent_contents([v for versions in current.values() for v in versions])
        return {patient: [contents[v] for v in versions] for patient, versions in current.items()}

    # -- proofs ------------------------------------------------------------------------------

    def leaf_indices(self, queue_ids: Sequence[int]) -> dict[int, int]:
        out: dict[int, int] = {}
        unique = sorted(set(queue_ids))
        with self.db.transaction() as cur:
            for chunk in _chunks(unique):
                cur.execute(f"SELECT queue_id, idx FROM log_entries WHERE queue_id IN ({', '.join('?' * len(chunk))})",
                            list(chunk))
                out.update((int(q), int(i)) for q, i in cur.fetchall())
        return out

    def proofs(self, versions: Sequence[StoredVersion], checkpoint: StoredCheckpoint) -> list[str | None]:
        """A c2sp.org/tlog-proof per version against ``checkpoint``; None where it is not covered yet."""
        indices = self.leaf_indices([v.queue_id for v in versions])
        size = checkpoint.checkpoint.size
        out: list[str | None] = []
        for version in versions:
            index = indices.get(version.queue_id)
            if index is None or index >= size:
                out.append(None)
                continue
            _, hashes = self.log.inclusion_proof(index, size)
            out.append(format_tlog_proof(index, hashes, checkpoint.note))
        return out
