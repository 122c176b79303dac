"""The search tables' layout: rows keyed by the resource's serial (on SQLite one WITHOUT ROWID b-tree
each), serials given in the order resources are first stored, and a store written in an earlier
layout (rows keyed by type and id; resources without serials) upgraded once, on both databases."""

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

# resource_current and the search tables as earlier stores held them: no serial, rows keyed by type and id
OLD_CURRENT = """
CREATE TABLE resource_current (res_type TEXT NOT NULL, res_id TEXT NOT NULL, version INTEGER NOT NULL,
                               last_updated TEXT NOT NULL, patient TEXT, PRIMARY KEY (res_type, res_id));
CREATE INDEX resource_current_patient ON resource_current (patient, res_type);
CREATE INDEX resource_current_updated ON resource_current (res_type, last_updated)
"""
OLD_SEARCH = {
    "sqlite rowid tables": """
CREATE TABLE search_tokens (res_type TEXT NOT NULL, res_id TEXT NOT NULL, param TEXT NOT NULL, value TEXT NOT NULL);
CREATE INDEX search_tokens_lookup ON search_tokens (res_type, param, value);
CREATE INDEX search_tokens_resource ON search_tokens (res_type, res_id);
CREATE TABLE search_dates (res_type TEXT NOT NULL, res_id TEXT NOT NULL, param TEXT NOT NULL, low BIGINT NOT NULL,
                           high BIGINT NOT NULL);
CREATE UNIQUE INDEX search_dates_resource ON search_dates (res_type, res_id, param, low, high);
CREATE INDEX search_dates_lookup ON search_dates (res_type, param, low, high)
""",
    "sqlite without rowid by type and id": """
CREATE TABLE search_tokens (res_type TEXT NOT NULL, res_id TEXT NOT NULL, param TEXT NOT NULL, value TEXT NOT NULL,
                            PRIMARY KEY (res_type, res_id, param, value)) WITHOUT ROWID;
CREATE TABLE search_dates (res_type TEXT NOT NULL, res_id TEXT NOT NULL, param TEXT NOT NULL, low BIGINT NOT NULL,
                           high BIGINT NOT NULL, PRIMARY KEY (res_type, res_id, param, low, high)) WITHOUT ROWID
""",
}
OLD_SEARCH["postgresql"] = OLD_SEARCH["sqlite rowid tables"]  # PostgreSQL's were the same tables and indexes
OLD_COLUMNS = {"search_tokens": "res_type, res_id, param, value", "search_dates": "res_type, res_id, param, low, high"}

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
    """Each search table's rows with the (type, id) their serial stands for, in order."""
    found = {}
    for table, columns in OLD_COLUMNS.items():
        mine = ", ".join(f"x.{c}" for c in columns.split(", ")[2:])
        cur.execute(f"SELECT c.res_type, c.res_id, {mine} FROM {table} x JOIN resource_current c ON c.serial = x.serial")
        found[table] = sorted(tuple(row) for row in cur.fetchall())
    return found


def serials(cur) -> dict[str, int]:
    cur.execute("SELECT res_id, serial FROM resource_current")
    return {res_id: int(serial) for res_id, serial in cur.fetchall()}


def layout(cur) -> dict[str, str]:
    cur.execute("SELECT name, sql FROM sqlite_master WHERE tbl_name IN ('search_tokens', 'search_dates') "
                "AND sql IS NOT NULL ORDER BY name")
    return dict(cur.fetchall())


@pytest.fixture
def sqlite_db(tmp_path: Path):
    database = open_database(f"sqlite:///{tmp_path / 'bridge.db'}")
    yield database
    database.close()


def written_in_earlier_layout(db, search_ddl: str) -> dict[str, list[tuple]]:
    """Put the store in an earlier layout (same resources and rows) and return its rows; the current
    resources are written in reverse order, so that numbering by that order is seen."""
    with db.transaction(write=True) as cur:
        rows = contents(cur)
        cur.execute("SELECT res_type, res_id, version, last_updated, patient FROM resource_current ORDER BY serial DESC")
        current = cur.fetchall()
        for table in ("search_tokens", "search_dates", "resource_current"):
            cur.execute(f"DROP TABLE {table}")
        for statement in (OLD_CURRENT + ";" + search_ddl).split(";"):
            cur.execute(statement)
        cur.executemany("INSERT INTO resource_current (res_type, res_id, version, last_updated, patient) "
                        "VALUES (?, ?, ?, ?, ?)", current)
        for table, columns in OLD_COLUMNS.items():
            marks = ", ".join("?" * len(rows[table][0]))
            cur.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows[table])
    return rows


def upgraded_once(db, search_ddl: str, caplog: pytest.LogCaptureFixture) -> None:
    data = stored(db)
    expected = results(data)
    assert expected[("Observation", "code=8867-4")] and expected[("Patient", "family=smi")], "queries that find rows"
    rows = written_in_earlier_layout(db, search_ddl)

    data.ensure_schema()
    assert "numbering the stored resources" in caplog.text
    assert f"search index rebuilt for {len(RESOURCES)} resources" in caplog.text
    with db.transaction() as cur:
        assert contents(cur) == rows, "every row once, now keyed by serial"
        numbered = serials(cur)
    assert sorted(numbered.values()) == list(range(1, len(RESOURCES) + 1))
    assert numbered["o4"] < numbered["p1"], "numbered in the order the earlier table held them"
    assert results(data) == expected

    caplog.clear()
    data.ensure_schema()  # the upgraded tables are recognised: nothing is done again
    assert "numbering" not in caplog.text and "rebuil" not in caplog.text
    with db.transaction(write=True) as cur:  # the upgraded tables are written as new ones are
        data.store.put(cur, observation("o1", "Patient/p2", "8310-5", "2025-03-09"), LAST_UPDATED)
        data.store.put(cur, observation("o5", "Patient/p3", "8867-4", "2025-03-09"), LAST_UPDATED)
    with db.transaction() as cur:
        after_serials = serials(cur)
    assert after_serials["o1"] == numbered["o1"], "a new version keeps its resource's serial"
    assert after_serials["o5"] > max(numbered.values()), "a new resource comes after every other"
    after = results(data)
    assert "o1" not in after[("Observation", "code=8867-4")] + after[("Observation", "patient=Patient/p1")]
    assert "o1" in after[("Observation", f"code={LOINC}|8310-5")] and "o5" in after[("Observation", "code=8867-4")]


@pytest.mark.parametrize("earlier", ["sqlite rowid tables", "sqlite without rowid by type and id"])
def test_an_sqlite_store_in_an_earlier_layout_is_upgraded_once(sqlite_db, earlier: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    upgraded_once(sqlite_db, OLD_SEARCH[earlier], caplog)
    with sqlite_db.transaction() as cur:
        tables = layout(cur)
        cur.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'resource_current' "
                    "AND sql IS NOT NULL ORDER BY name")
        assert [r[0] for r in cur.fetchall()] == ["resource_current_patient", "resource_current_updated"], \
            "the new resource_current has its indexes"
    assert set(tables) == {"search_tokens", "search_dates"}, "the earlier indexes went with their tables"
    assert all(sql.endswith("WITHOUT ROWID") for sql in tables.values()), tables


def test_a_postgresql_store_in_the_earlier_layout_is_upgraded_once(postgres_server,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    db = open_database(postgres_server.create_database())
    try:
        upgraded_once(db, OLD_SEARCH["postgresql"], caplog)
        with db.transaction() as cur:
            cur.execute("SELECT indexname FROM pg_indexes WHERE tablename IN ('search_tokens', 'search_dates') "
                        "ORDER BY indexname")
            assert [r[0] for r in cur.fetchall()] == ["search_dates_lookup", "search_dates_pkey",
                                                      "search_tokens_lookup", "search_tokens_pkey"]
    finally:
        db.close()


def test_a_new_store_numbers_resources_as_they_are_first_stored(db, caplog: pytest.LogCaptureFixture) -> None:
    data = stored(db)
    assert "rebuil" not in caplog.text and "numbering" not in caplog.text
    with db.transaction() as cur:
        numbered = serials(cur)
    assert [numbered[r["id"]] for r in RESOURCES] == sorted(numbered.values()), "in the order stored"
    with db.transaction(write=True) as cur:
        data.store.put(cur, patient("p1", "smyth", "female", "1980-02-03"), LAST_UPDATED)
    with db.transaction() as cur:
        assert serials(cur) == numbered, "a new version is the same resource"
        rows = contents(cur)
    assert ("Patient", "p1", "family", "smyth") in rows["search_tokens"]
    assert not [r for r in rows["search_tokens"] if r[:2] == ("Patient", "p1") and r[3] == "smith"], "version 1's rows went"
    assert results(data)[("Patient", "family=smi")] == ["p3"]


def test_a_new_sqlite_store_has_without_rowid_tables_keyed_by_serial(sqlite_db) -> None:
    stored(sqlite_db)
    with sqlite_db.transaction() as cur:
        tables = layout(cur)
    assert set(tables) == {"search_tokens", "search_dates"} and all("WITHOUT ROWID" in s for s in tables.values())
    assert all("PRIMARY KEY (serial, param," in s for s in tables.values()), tables


def test_every_sqlite_search_probes_the_key_per_resource(sqlite_db) -> None:
    """The plan SQLite picks: resource_current by type, each row tested by key (serial, param, ...)."""
    stored(sqlite_db)
    with sqlite_db.transaction() as cur:
        for res_type, query in QUERIES:
            args = [tuple(part.split("=", 1)) for part in query.split("&")]
            sql, params = search_sql(parse_search(res_type, args))  # type: ignore[arg-type]
            cur.execute("EXPLAIN QUERY PLAN " + sql, params)
            steps = [row[3] for row in cur.fetchall() if row[3].startswith(("SEARCH t ", "SEARCH d ", "SCAN"))]
            assert steps and all(s.startswith(("SEARCH t USING PRIMARY KEY (serial=? AND param=?",
                                               "SEARCH d USING PRIMARY KEY (serial=? AND param=?"))
                                 for s in steps), (query, steps)
        for table in search_index.SEARCH_TABLES:  # replacing a version deletes its rows by key
            cur.execute(f"EXPLAIN QUERY PLAN DELETE FROM {table} WHERE serial = ?", (1,))
            assert cur.fetchone()[3].endswith("USING PRIMARY KEY (serial=?)")


def test_a_resource_repeating_a_value_is_indexed_once(db) -> None:
    """extract yields each (param, value) once, as the keys require: a coding given twice and a date
    given in two elements of one parameter are one row each."""
    obs = observation("twice", "Patient/p1", "8867-4", "2025-03-01", issued="2025-03-01")
    obs["code"]["coding"] *= 2
    data = stored(db)
    with db.transaction(write=True) as cur:
        data.store.put(cur, obs, LAST_UPDATED)
    with db.transaction() as cur:
        rows = contents(cur)
    assert [r[2:] for r in rows["search_tokens"] if r[1] == "twice" and r[2] == "code"] == [
        ("code", "8867-4"), ("code", f"{LOINC}|8867-4")]
    assert len([r for r in rows["search_dates"] if r[1] == "twice"]) == 1
