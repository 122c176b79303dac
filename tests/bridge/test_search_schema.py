"""The search tables' layout: on SQLite one WITHOUT ROWID b-tree each, keyed by resource (and a store
written with the earlier rowid tables rewritten once); on PostgreSQL the tables and indexes as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge import search_index
from bridge.db import open_database
from bridge.fhir_data import FhirData
from bridge.fhir_query import parse_search, search_sql

from .fhir_support import stored_data

LAST_UPDATED = "2026-01-01T00:00:00.000Z"
LOINC = "http://loinc.org"

# the search tables as a SQLite store held them before they were WITHOUT ROWID
OLD_LAYOUT = """
CREATE TABLE search_tokens (res_type TEXT NOT NULL, res_id TEXT NOT NULL, param TEXT NOT NULL, value TEXT NOT NULL);
CREATE INDEX search_tokens_lookup ON search_tokens (res_type, param, value);
CREATE INDEX search_tokens_resource ON search_tokens (res_type, res_id);
CREATE TABLE search_dates (res_type TEXT NOT NULL, res_id TEXT NOT NULL, param TEXT NOT NULL, low BIGINT NOT NULL,
                           high BIGINT NOT NULL);
CREATE UNIQUE INDEX search_dates_resource ON search_dates (res_type, res_id, param, low, high);
CREATE INDEX search_dates_lookup ON search_dates (res_type, param, low, high)
"""

QUERIES = [
    ("Observation", "code=8867-4"), ("Observation", f"code={LOINC}|8310-5"), ("Observation", "code=8867-4,8310-5"),
    ("Observation", "patient=Patient/p1"), ("Observation", "patient=Patient/p1&code=8867-4&date=ge2025-03-02"),
    ("Observation", "status=final&date=lt2025-03-03"), ("Observation", "date=2025-03-02"),
    ("Patient", "family=smi"), ("Patient", "family:exact=smith"), ("Patient", "name:contains=ones"),
    ("Patient", "gender=female&birthdate=1980"),
]


def observation(oid: str, patient: str, code: str, day: str, **more: object) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final", "subject": {"reference": patient},
            "code": {"coding": [{"system": LOINC, "code": code}]}, "effectiveDateTime": day, **more}


def patient(pid: str, family: str, gender: str, born: str) -> dict:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": family.title()}], "gender": gender,
            "birthDate": born}


RESOURCES = [
    patient("p1", "smith", "female", "1980-02-03"), patient("p2", "jones", "male", "1980-07-01"),
    patient("p3", "smithers", "female", "1991-01-01"),
    observation("o1", "Patient/p1", "8867-4", "2025-03-01"), observation("o2", "Patient/p1", "8310-5", "2025-03-02"),
    observation("o3", "Patient/p2", "8867-4", "2025-03-02T10:00:00Z"),
    observation("o4", "Patient/p1", "8867-4", "2025-03-04", status="amended"),
]


def stored(db) -> FhirData:
    return stored_data(db, RESOURCES, LAST_UPDATED)


def results(data: FhirData) -> dict[tuple[str, str], list[str]]:
    out = {}
    for res_type, query in QUERIES:
        args = [tuple(part.split("=", 1)) for part in query.split("&")]
        out[res_type, query] = [row.res_id for row in data.rows(*search_sql(parse_search(res_type, args)))]  # type: ignore[arg-type]
    return out


def contents(cur) -> dict[str, list[tuple]]:
    found = {}
    for table, (columns, _) in search_index._SQLITE_TABLES.items():
        cur.execute(f"SELECT {columns} FROM {table} ORDER BY {columns}")
        found[table] = cur.fetchall()
    return found


def layout(cur) -> dict[str, str]:
    cur.execute("SELECT name, sql FROM sqlite_master WHERE tbl_name IN ('search_tokens', 'search_dates') "
                "AND sql IS NOT NULL ORDER BY name")
    return dict(cur.fetchall())


@pytest.fixture
def sqlite_db(tmp_path: Path):
    database = open_database(f"sqlite:///{tmp_path / 'bridge.db'}")
    yield database
    database.close()


def test_an_sqlite_store_with_rowid_search_tables_is_rewritten_once(sqlite_db, caplog: pytest.LogCaptureFixture) -> None:
    data = stored(sqlite_db)
    expected = results(data)
    assert expected[("Observation", "code=8867-4")] and expected[("Patient", "family=smi")], "queries that find rows"
    with sqlite_db.transaction(write=True) as cur:
        rows = contents(cur)
        # the store as the earlier layout wrote it, a token row there twice (that table had no key)
        cur.execute("DROP TABLE search_tokens")
        cur.execute("DROP TABLE search_dates")
        for statement in OLD_LAYOUT.split(";"):
            cur.execute(statement)
        for table, (columns, _) in search_index._SQLITE_TABLES.items():
            marks = ", ".join("?" * len(rows[table][0]))
            cur.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows[table])
        cur.execute("INSERT INTO search_tokens SELECT * FROM search_tokens WHERE res_id = 'o1' LIMIT 1")
        cur.execute("DELETE FROM search_index_state WHERE name = ?", (search_index.WITHOUT_ROWID_STATE[0],))
        assert "WITHOUT ROWID" not in layout(cur)["search_tokens"]
    assert results(data) == expected

    data.ensure_schema()
    assert "rewriting search_tokens as a WITHOUT ROWID table" in caplog.text
    assert "rewriting search_dates as a WITHOUT ROWID table" in caplog.text
    with sqlite_db.transaction() as cur:
        assert contents(cur) == rows, "every row once"
        tables = layout(cur)
    assert set(tables) == {"search_tokens", "search_dates"}, "the earlier indexes went with their tables"
    assert all(sql.endswith("WITHOUT ROWID") for sql in tables.values()), tables
    assert results(data) == expected

    caplog.clear()
    data.ensure_schema()  # recorded: not run again
    assert "rewriting" not in caplog.text
    with sqlite_db.transaction(write=True) as cur:  # the rewritten tables are written as new ones are
        data.store.put(cur, observation("o1", "Patient/p2", "8310-5", "2025-03-09"), LAST_UPDATED)
    after = results(data)
    assert "o1" not in after[("Observation", "code=8867-4")] + after[("Observation", "patient=Patient/p1")]
    assert "o1" in after[("Observation", f"code={LOINC}|8310-5")]


def test_a_new_sqlite_store_has_without_rowid_tables(sqlite_db, caplog: pytest.LogCaptureFixture) -> None:
    data = stored(sqlite_db)
    assert "rewriting" not in caplog.text
    with sqlite_db.transaction() as cur:
        tables = layout(cur)
        cur.execute("SELECT value FROM search_index_state WHERE name = ?", (search_index.WITHOUT_ROWID_STATE[0],))
        assert cur.fetchone() == (search_index.WITHOUT_ROWID_STATE[1],)
    assert set(tables) == {"search_tokens", "search_dates"} and all("WITHOUT ROWID" in s for s in tables.values())
    assert results(data)[("Patient", "family=smi")] == ["p1", "p3"]


def test_every_sqlite_search_probes_the_key_per_resource(sqlite_db) -> None:
    """The plan SQLite picks: resource_current by type, each row tested by key (type, id, param, ...)."""
    stored(sqlite_db)
    with sqlite_db.transaction() as cur:
        for res_type, query in QUERIES:
            args = [tuple(part.split("=", 1)) for part in query.split("&")]
            sql, params = search_sql(parse_search(res_type, args))  # type: ignore[arg-type]
            cur.execute("EXPLAIN QUERY PLAN " + sql, params)
            steps = [row[3] for row in cur.fetchall() if row[3].startswith(("SEARCH t ", "SEARCH d ", "SCAN"))]
            assert steps and all(s.startswith(("SEARCH t USING PRIMARY KEY (res_type=? AND res_id=? AND param=?",
                                               "SEARCH d USING PRIMARY KEY (res_type=? AND res_id=? AND param=?"))
                                 for s in steps), (query, steps)
        for table in search_index._SQLITE_TABLES:  # replacing a version deletes its rows by key
            cur.execute(f"EXPLAIN QUERY PLAN DELETE FROM {table} WHERE res_type = ? AND res_id = ?", ("Patient", "p1"))
            assert cur.fetchone()[3].endswith("USING PRIMARY KEY (res_type=? AND res_id=?)")


def test_a_resource_repeating_a_value_is_indexed_once(db) -> None:
    """extract yields each (param, value) once, as the SQLite key requires: a coding given twice and
    a date given in two elements of one parameter are one row each."""
    obs = observation("twice", "Patient/p1", "8867-4", "2025-03-01", issued="2025-03-01")
    obs["code"]["coding"] *= 2
    data = stored(db)
    with db.transaction(write=True) as cur:
        data.store.put(cur, obs, LAST_UPDATED)
    with db.transaction() as cur:
        cur.execute("SELECT param, value FROM search_tokens WHERE res_id = 'twice' AND param = 'code' ORDER BY value")
        assert cur.fetchall() == [("code", "8867-4"), ("code", f"{LOINC}|8867-4")]
        cur.execute("SELECT COUNT(*) FROM search_dates WHERE res_id = 'twice'")
        assert cur.fetchone()[0] == 1


def test_postgresql_keeps_its_tables_and_indexes(postgres_server) -> None:
    db = open_database(postgres_server.create_database())
    stored(db)
    with db.transaction() as cur:
        cur.execute("SELECT indexname FROM pg_indexes WHERE tablename IN ('search_tokens', 'search_dates') "
                    "ORDER BY indexname")
        assert [r[0] for r in cur.fetchall()] == ["search_dates_lookup", "search_dates_resource",
                                                  "search_tokens_lookup", "search_tokens_resource"]
        cur.execute("SELECT 1 FROM search_index_state WHERE name = ?", (search_index.WITHOUT_ROWID_STATE[0],))
        assert cur.fetchone() is None
    db.close()
