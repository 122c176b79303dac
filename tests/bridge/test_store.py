"""The versioned store: every version kept, salted leaves in the same transaction, JCS hashes a
partner can recompute, no new version for the same content; on SQLite and a real PostgreSQL."""

from __future__ import annotations

import hashlib
import json

import pytest
import rfc8785

from anchoring.log import MerkleLog
from bridge.store import ResourceStore, canonical_resource, content_key, leaf_data

PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Müller", "given": ["Ána"]}], "birthDate": "1970-01-02"}


@pytest.fixture
def log(db) -> MerkleLog:
    log = MerkleLog(db, "test.example/log")
    log.ensure_schema()
    return log


@pytest.fixture
def store(db, log) -> ResourceStore:
    store = ResourceStore(db)
    store.ensure_schema()
    return store


def put(store: ResourceStore, resource: dict, when: str = "2024-01-01T00:00:00.000Z"):
    with store.db.transaction(write=True) as cur:
        return store.put(cur, resource, when)


def test_versions_meta_and_recomputable_hash(store: ResourceStore, log: MerkleLog) -> None:
    v1 = put(store, PATIENT)
    assert (v1.version, v1.created) == (1, True)
    stored = store.read("Patient", "p1")
    received = json.loads(stored.content)  # what a partner receives
    assert received["meta"] == {"versionId": "1", "lastUpdated": "2024-01-01T00:00:00.000Z"}
    assert stored.content == rfc8785.dumps(received)  # stored canonical: JCS of the JSON itself
    assert stored.sha256 == hashlib.sha256(stored.salt + rfc8785.dumps(received)).hexdigest()
    assert len(stored.salt) == 32
    assert json.loads(stored.leaf_data) == {"type": "Patient", "id": "p1", "version": 1, "sha256": stored.sha256}
    assert stored.salt.hex() not in stored.leaf_data.decode()

    assert store.leaf_index(log, stored) is None  # queued, not yet sequenced
    assert log.sequence() == 1
    index = store.leaf_index(log, stored)
    assert index == 0 and log.entry(index) == leaf_data("Patient", "p1", 1, stored.sha256)


def test_same_content_makes_no_new_version_changed_content_does(store: ResourceStore, log: MerkleLog) -> None:
    put(store, PATIENT)
    again = put(store, {**PATIENT, "meta": {"versionId": "9", "lastUpdated": "2030-01-01T00:00:00Z"}}, "2024-02-01T00:00:00.000Z")
    assert (again.version, again.created) == (1, False)
    changed = put(store, {**PATIENT, "birthDate": "1970-01-03"}, "2024-03-01T00:00:00.000Z")
    assert (changed.version, changed.created) == (2, True)
    history = store.history("Patient", "p1")
    assert [v.version for v in history] == [1, 2]
    assert history[0].resource["birthDate"] == "1970-01-02"  # every version kept
    assert history[0].salt != history[1].salt
    assert log.queued() == 2 and store.count() == 2


def test_a_failed_transaction_leaves_neither_version_nor_leaf(store: ResourceStore, log: MerkleLog) -> None:
    with pytest.raises(RuntimeError), store.db.transaction(write=True) as cur:
        store.put(cur, PATIENT, "2024-01-01T00:00:00.000Z")
        raise RuntimeError("crash between version and commit")
    assert store.count() == 0 and log.queued() == 0


def test_resource_without_id_is_refused(store: ResourceStore) -> None:
    from bridge.errors import IngestError

    with pytest.raises(IngestError, match="converter must assign ids"):
        put(store, {"resourceType": "Patient"})


@pytest.mark.parametrize("count", [1, 15, 16, 17, 399, 400, 401, 833])
def test_latest_of_any_number_of_keys_is_that_of_each_key(store: ResourceStore, count: int) -> None:
    """Lookups are padded to a few sizes (with a repeated key) and cut into chunks: each key still
    gets its own latest version, and a key with none gets nothing."""
    with store.db.transaction(write=True) as cur:
        batch = store.batch(cur, {})
        for n in range(0, 840, 2):  # every other id has versions, 1 to 3 of them
            for version in range(1 + n % 3):
                batch.put(canonical_resource({"resourceType": "Observation", "id": f"o{n}", "status": "final",
                                              "code": {"text": f"v{version}"}}), "2024-01-01T00:00:00.000Z")
        batch.flush()
    keys = [("Observation", f"o{n}") for n in range(count)] + [("Observation", "o0")]  # one key twice
    with store.db.transaction() as cur:
        found = store.latest(cur, keys)
    expected = {}
    for res_type, res_id in set(keys):
        stored = store.read(res_type, res_id)
        if stored is not None:
            expected[(res_type, res_id)] = (stored.version, content_key(stored.resource))
    assert found == expected
    assert len(found) == (count + 1) // 2  # the even ids below count


def test_latest_seeks_its_keys_whatever_the_size_of_the_store(tmp_path) -> None:
    """The group lookup of latest versions must not read the whole table (SQLite VM steps counted)."""
    import sqlite3

    from anchoring.db import SqliteDatabase
    from bridge.store import canonical_resource

    db = SqliteDatabase(tmp_path / "s.db", synchronous="OFF")
    MerkleLog(db, "test.example/log").ensure_schema()
    store = ResourceStore(db)
    store.ensure_schema()
    keys = [("Patient", "p1"), ("Patient", "missing")]
    put(store, PATIENT)

    def steps() -> int:
        count = [0]
        conn: sqlite3.Connection = db._connection()
        conn.set_progress_handler(lambda: count.__setitem__(0, count[0] + 1) or 0, 10)
        with db.transaction() as cur:
            assert store.latest(cur, keys) == {("Patient", "p1"): (1, canonical_resource(PATIENT).key)}
        conn.set_progress_handler(None, 0)
        return count[0]

    small = steps()
    with db.transaction(write=True) as cur:
        batch = store.batch(cur, {})
        for n in range(3000):
            batch.put(canonical_resource({"resourceType": "Observation", "id": f"o{n}", "status": "final",
                                          "code": {"text": "x"}}), "2024-01-01T00:00:00.000Z")
        batch.flush()
    assert steps() < 2 * small + 20, "latest() reads more as the store grows: it scans instead of seeking"
    db.close()
