"""Mechanisms added for the read rate (issue #5): AuditEvents stored from a NewVersion computed before
the write lock, the cross-process write lock of SqliteDatabase, and gthread workers."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from anchoring.db import SqliteDatabase
from bridge.audit import Access, audit_event, now_instant, prepare
from bridge.config import load_config
from bridge.errors import ConfigError
from bridge.fhir_data import FhirData
from bridge.serve import _gunicorn_command
from bridge.services import open_services
from bridge.store import new_version


def _rows(db, res_id):  # type: ignore[no-untyped-def]
    with db.transaction() as cur:
        cur.execute("SELECT version, last_updated, content, content_key FROM resource_versions WHERE res_id = ?",
                    (res_id,))
        versions = cur.fetchall()
        cur.execute("SELECT version, last_updated, patient FROM resource_current WHERE res_id = ?", (res_id,))
        current = cur.fetchall()
        cur.execute("SELECT param, value FROM search_tokens t JOIN resource_current c ON c.serial = t.serial "
                    "WHERE c.res_id = ? ORDER BY param, value", (res_id,))
        tokens = cur.fetchall()
    return versions, current, tokens


def test_put_new_stores_what_put_canonical_stores(config):
    """The precomputed path gives the same version row (salt aside), current row and search tokens."""
    services = open_services(config)
    data = FhirData(services.db, services.log)
    data.ensure_schema()
    try:
        access = Access("read", "org-a", "c", {"Patient/p1"}, ["Observation/o1/_history/2"], "/fhir/Observation/o1")
        recorded = now_instant()
        slow = audit_event(access, "0", "ok", recorded, "test")
        fast = dict(slow, id=slow["id"] + "-fast")
        with services.db.transaction(write=True) as cur:
            data.store.put_canonical(cur, prepare(slow), recorded)
            data.store.put_new(cur, [new_version(fast, prepare(fast), recorded)])
        (v1,), c1, t1 = _rows(services.db, slow["id"])
        (v2,), c2, t2 = _rows(services.db, fast["id"])
        assert v2[0] == 1 and v2[1] == v1[1] and c1 == c2 and t1 == t2 and t1
        assert v2[2] == v1[2].replace(slow["id"].encode(), fast["id"].encode())
        stored = data.store.read("AuditEvent", fast["id"])
        assert stored is not None and stored.sha256 == hashlib.sha256(stored.salt + stored.content).hexdigest()
        assert services.log.queued() == 2, "each leaf is queued in the transaction that stores its event"
    finally:
        services.close()


def test_write_transactions_exclude_each_other_through_the_lock_file(tmp_path):
    """Two handles on one file (as two processes have) never overlap their write transactions."""
    path = tmp_path / "x.db"
    first, second = SqliteDatabase(path), SqliteDatabase(path)
    with first.transaction(write=True) as cur:
        cur.execute("CREATE TABLE t (n INTEGER)")
    inside = threading.Event()
    order: list[str] = []

    def hold() -> None:
        with first.transaction(write=True) as cur:
            cur.execute("INSERT INTO t VALUES (1)")
            inside.set()
            time.sleep(0.2)
            order.append("first commits")

    holder = threading.Thread(target=hold)
    holder.start()
    inside.wait(5)
    with second.transaction(write=True) as cur:
        order.append("second begins")
        cur.execute("INSERT INTO t VALUES (2)")
    holder.join()
    assert order == ["first commits", "second begins"]
    assert (tmp_path / "x.db-writelock").exists()
    with second.transaction() as cur:  # reads take no lock
        cur.execute("SELECT COUNT(*) FROM t")
        assert cur.fetchone()[0] == 2
    first.close()
    second.close()


def test_gunicorn_runs_threaded_workers(tmp_path):
    command = _gunicorn_command(load_config(env={"FHIR_BRIDGE_THREADS": "5"}, data_dir=tmp_path))
    assert command[command.index("--worker-class") + 1] == "gthread"
    assert command[command.index("--threads") + 1] == "5"
    assert load_config(env={}, data_dir=tmp_path).threads == 16
    assert "--access-logfile" not in command  # AuditEvents record every /fhir access; the log is opt-in
    logged = _gunicorn_command(load_config(env={"FHIR_BRIDGE_ACCESS_LOG": "true"}, data_dir=tmp_path))
    assert logged[logged.index("--access-logfile") + 1] == "-"
    with pytest.raises(ConfigError, match="access_log"):
        load_config(env={"FHIR_BRIDGE_ACCESS_LOG": "sometimes"}, data_dir=tmp_path)


def test_audit_event_template_is_rfc8785():
    """prepare() skips the generic JCS walk; its bytes must still be exactly RFC 8785 (rfc8785 package)."""
    import rfc8785

    from bridge.store import TIME_MARK, VERSION_MARK, with_version_meta

    access = Access("search-type", "org-ü", "client-😀", {"Patient/p1", "Patient/p2"},
                    ["Observation/o1/_history/1"], "/fhir/Observation?code=ä\"\\\t&x=😀")
    event = audit_event(access, "4", "HTTP 403: consent: déni \u0001 😀", now_instant(), "origin/log")
    assert prepare(event).template == rfc8785.dumps(with_version_meta(event, VERSION_MARK, TIME_MARK))
    assert prepare(event).content(1, "2026-01-01T00:00:00Z") == rfc8785.dumps(
        with_version_meta(event, 1, "2026-01-01T00:00:00Z") | {"meta": {"versionId": "1",
                                                                          "lastUpdated": "2026-01-01T00:00:00Z"}})


# -- one read transaction per request ----------------------------------------------------------

def _table(db, rows: int) -> None:  # type: ignore[no-untyped-def]
    with db.transaction(write=True) as cur:
        cur.execute("CREATE TABLE shared_t (v INTEGER)")
        for v in range(rows):
            cur.execute("INSERT INTO shared_t (v) VALUES (?)", (v,))


def _count(db) -> int:  # type: ignore[no-untyped-def]
    with db.transaction() as cur:
        cur.execute("SELECT COUNT(*) FROM shared_t")
        return int(cur.fetchone()[0])


def _insert_elsewhere(db, v: int) -> None:  # type: ignore[no-untyped-def]
    """A commit from another thread (its own connection), as another request would make."""
    def run() -> None:
        with db.transaction(write=True) as cur:
            cur.execute("INSERT INTO shared_t (v) VALUES (?)", (v,))
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)


def test_reads_of_a_shared_read_see_one_snapshot(db):  # type: ignore[no-untyped-def]
    _table(db, 1)
    db.begin_shared_read()
    try:
        assert _count(db) == 1
        _insert_elsewhere(db, 2)  # committed while the shared read is open
        assert _count(db) == 1  # a later read of the same request sees the same snapshot
    finally:
        db.end_shared_read()
    assert _count(db) == 2  # the next request sees the commit


def test_a_write_ends_the_shared_read(db):  # type: ignore[no-untyped-def]
    _table(db, 1)
    db.begin_shared_read()
    assert _count(db) == 1
    _insert_elsewhere(db, 2)
    with db.transaction(write=True) as cur:  # e.g. the AuditEvent of the request
        cur.execute("INSERT INTO shared_t (v) VALUES (3)")
    assert _count(db) == 3  # its own transaction: both commits are seen
    db.end_shared_read()  # nothing left to end: no error


def test_a_failed_statement_ends_the_shared_read(db):  # type: ignore[no-untyped-def]
    _table(db, 1)
    db.begin_shared_read()
    with pytest.raises(Exception, match="no_such_table|no such table|does not exist"):
        with db.transaction() as cur:
            cur.execute("SELECT * FROM no_such_table")
    # PostgreSQL would refuse every later statement of an aborted transaction; the next read has its own
    _insert_elsewhere(db, 2)
    assert _count(db) == 2
    db.end_shared_read()


def test_a_write_inside_a_read_transaction_of_a_shared_read_is_refused(db):  # type: ignore[no-untyped-def]
    _table(db, 1)
    db.begin_shared_read()
    with pytest.raises(Exception, match="readonly|read-only"):  # PostgreSQL at once, SQLite at the end
        with db.transaction() as cur:  # a read transaction: writes belong in transaction(write=True)
            cur.execute("INSERT INTO shared_t (v) VALUES (9)")
        db.end_shared_read()
    db.end_shared_read()
    assert _count(db) == 1  # rolled back
    with db.transaction(write=True) as cur:  # the connection writes again once the shared read ended
        cur.execute("INSERT INTO shared_t (v) VALUES (4)")
    assert _count(db) == 2
