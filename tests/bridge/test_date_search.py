"""Date search over the index (search_index + fhir_query) on SQLite and a real PostgreSQL: every R4
prefix against resources of every precision, in other time zones and with Periods open at either
end; ``_lastUpdated``; refused values; and the upgrade of an index that predates ``search_dates``."""

from __future__ import annotations

import pytest

from bridge import search_index
from bridge.fhir_data import FhirData
from bridge.fhir_dates import DateRange, matches, parse_range, value_range
from bridge.fhir_query import SearchError, parse_search, search_sql
from bridge.store import canonical_resource, new_version

from .fhir_support import stored_data

NOW = parse_range("2025-04-04T00:00:00Z").low  # ``ap`` is measured from here


def observation(oid: str, **effective: object) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final", "code": {"text": "x"}, **effective}


# Observation.effective[x] of each test resource, and the range (UTC) it stands for
EFFECTIVE = {
    "year": {"effectiveDateTime": "2025"},  # [2025-01-01, 2026-01-01)
    "month": {"effectiveDateTime": "2025-03"},  # [03-01, 04-01)
    "day": {"effectiveDateTime": "2025-03-04"},  # [03-04, 03-05)
    "minute": {"effectiveDateTime": "2025-03-04T10:00"},  # no zone: UTC, [10:00, 10:01)
    "evening": {"effectiveDateTime": "2025-03-04T23:30:00-05:00"},  # 03-05T04:30:00Z, one second
    "india": {"effectiveDateTime": "2025-03-04T10:00:00.250+05:30"},  # 03-04T04:30:00.250Z, one ms
    "closed": {"effectivePeriod": {"start": "2025-03-01", "end": "2025-03-10"}},  # [03-01, 03-11)
    "ongoing": {"effectivePeriod": {"start": "2025-03-04T12:00:00Z"}},  # [03-04T12:00, open)
    "since_ever": {"effectivePeriod": {"end": "2025-02-01"}},  # [open, 02-02)
    "old": {"effectiveDateTime": "2024-12-31"},  # [2024-12-31, 2025-01-01)
}
ALL = set(EFFECTIVE)


@pytest.fixture
def data(db) -> FhirData:
    return stored_data(db, [observation(oid, **effective) for oid, effective in EFFECTIVE.items()],
                       "2026-01-01T00:00:00.000Z")


def found(data: FhirData, res_type: str, query: str, now: int = NOW) -> set[str]:
    args = [tuple(part.split("=", 1)) for part in query.split("&")]
    return {row.res_id for row in data.rows(*search_sql(parse_search(res_type, args, now=now)))}  # type: ignore[arg-type]


@pytest.mark.parametrize("query, expected", [
    # a day: [2025-03-04, 2025-03-05) UTC
    ("date=2025-03-04", {"day", "minute", "india"}),
    ("date=eq2025-03-04", {"day", "minute", "india"}),
    ("date=ne2025-03-04", ALL - {"day", "minute", "india"}),
    ("date=gt2025-03-04", {"year", "month", "evening", "closed", "ongoing"}),
    ("date=lt2025-03-04", {"year", "month", "closed", "since_ever", "old"}),
    ("date=ge2025-03-04", {"year", "month", "evening", "closed", "ongoing", "day", "minute", "india"}),
    ("date=le2025-03-04", {"year", "month", "closed", "since_ever", "old", "day", "minute", "india"}),
    ("date=sa2025-03-04", {"evening"}),
    ("date=eb2025-03-04", {"since_ever", "old"}),
    # ap: now is 30 days after the day's end, so 3 days either side: [03-01, 03-08)
    ("date=ap2025-03-04", ALL - {"since_ever", "old"}),
    # a year holds every closed range in it, no open one
    ("date=2025", {"year", "month", "day", "minute", "evening", "india", "closed"}),
    ("date=ne2025", {"ongoing", "since_ever", "old"}),
    ("date=2024", {"old"}),
    ("date=sa2024", ALL - {"since_ever", "old"}),
    # a month
    ("date=2025-03", {"month", "day", "minute", "evening", "india", "closed"}),
    ("date=eb2025-03", {"since_ever", "old"}),
    ("date=sa2025-02-28", {"month", "day", "minute", "evening", "india", "closed", "ongoing"}),
    # minute and second precision, and zones in the search value
    ("date=2025-03-04T10:00", {"minute"}),
    ("date=2025-03-04T10:00Z", {"minute"}),
    ("date=gt2025-03-04T10:00", {"year", "month", "day", "evening", "closed", "ongoing"}),
    ("date=2025-03-04T10:00:00+05:30", {"india"}),  # 04:30:00Z, holds 04:30:00.250
    ("date=2025-03-04T10:00:00 05:30", {"india"}),  # "+" form-decoded to a space
    ("date=2025-03-04T04:30:00.250Z", {"india"}),
    ("date=2025-03-04T04:30:00.25Z", {"india"}),
    ("date=2025-03-04T04:30:00.2Z", {"india"}),
    ("date=2025-03-04T04:30:00.251Z", set()),
    ("date=2025-03-04T23:30:00-05:00", {"evening"}),
    # a dateTime past midnight in UTC is on the next day
    ("date=2025-03-05", {"evening"}),
    ("date=eb2025-03-05T00:00:00-05:00", {"day", "minute", "evening", "india", "since_ever", "old"}),  # 05:00Z
    # a Period's end counts with its precision: "2025-03-10" ends with that day
    ("date=eb2025-03-11", {"day", "minute", "evening", "india", "closed", "since_ever", "old"}),
    ("date=eb2025-03-10", {"day", "minute", "evening", "india", "since_ever", "old"}),
    ("date=2025-03-01", set()),
    ("date=gt2030", {"ongoing"}),
    ("date=lt1900", {"since_ever"}),
    ("date=le1900", {"since_ever"}),
    ("date=ge2030", {"ongoing"}),
    # comma: OR; repeated: AND
    ("date=2025-03-05,2024", {"evening", "old"}),
    ("date=sa2025-03-04,eb2025-03-04", {"evening", "since_ever", "old"}),
    ("date=ge2025-03-01&date=lt2025-03-05", {"year", "month", "day", "minute", "india", "closed", "ongoing"}),
    ("date=2025&date=ne2025-03", {"year"}),
    ("date=2025&_id=day,old", {"day"}),
])
def test_date_prefixes_over_precisions_zones_and_periods(data: FhirData, query: str, expected: set[str]) -> None:
    assert found(data, "Observation", query) == expected


def test_ap_follows_now(data: FhirData) -> None:
    assert found(data, "Observation", "date=ap2025-03-04", now=parse_range("2025-03-04T12:00Z").low) == (
        ALL - {"evening", "since_ever", "old"}), "now inside: plain overlap"
    assert found(data, "Observation", "date=ap2025-03-04", now=parse_range("2035-03-04").low) == ALL, "a year's slack"


@pytest.mark.parametrize("value", [
    "2025", "2025-03", "2025-03-04", "2025-03-05", "2025-03-04T10:00", "2025-03-04T04:30:00.250Z", "2024-12-31",
    "2025-03-10", "2025-03-11", "2025-02-01T23:59:59+01:00", "1900", "2030",
])
def test_sql_agrees_with_the_prefix_definitions(data: FhirData, value: str) -> None:
    """Every prefix, evaluated by the database, finds exactly what :func:`matches` says of the ranges."""
    ranges = {oid: value_range(next(iter(eff.values()))) for oid, eff in EFFECTIVE.items()}
    for prefix in ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"):
        search = parse_range(value)
        expected = {oid for oid, target in ranges.items() if matches(prefix, search, target)}
        assert found(data, "Observation", f"date={prefix}{value}") == expected, prefix


def test_new_version_replaces_its_date_rows(data: FhirData) -> None:
    with data.db.transaction(write=True) as cur:
        data.store.put(cur, observation("day", effectivePeriod={"start": "2020-01-01"}), "2026-01-02T00:00:00.000Z")
    assert "day" not in found(data, "Observation", "date=2025-03-04")
    assert "day" in found(data, "Observation", "date=sa2019-12-31") and "day" in found(data, "Observation", "date=gt2030")
    with data.db.transaction() as cur:
        cur.execute("SELECT COUNT(*) FROM search_dates d JOIN resource_current c ON c.serial = d.serial "
                    "WHERE c.res_id = 'day'")
        assert cur.fetchone()[0] == 1, "the Period, nothing of version 1"


def test_birthdate_leap_day_and_precisions(data: FhirData) -> None:
    with data.db.transaction(write=True) as cur:
        for pid, birth in (("y", "1980"), ("m", "1980-02"), ("leap", "1980-02-29"), ("after", "1980-03-01")):
            data.store.put(cur, {"resourceType": "Patient", "id": pid, "birthDate": birth}, "2026-01-01T00:00:00Z")
    assert found(data, "Patient", "birthdate=1980-02-29") == {"leap"}
    assert found(data, "Patient", "birthdate=1980-02") == {"m", "leap"}
    assert found(data, "Patient", "birthdate=1980") == {"y", "m", "leap", "after"}
    assert found(data, "Patient", "birthdate=sa1980-02-28") == {"leap", "after"}
    assert found(data, "Patient", "birthdate=eb1980-03") == {"m", "leap"}  # February ends where March begins
    assert found(data, "Patient", "birthdate=gt1980-02-29") == {"y", "after"}  # February ends with the 29th


def test_last_updated_compares_instants_across_zones(data: FhirData) -> None:
    with data.db.transaction(write=True) as cur:
        for oid, when in (("u1", "2026-01-01T23:30:00.000-05:00"),  # 2026-01-02T04:30Z
                          ("u2", "2026-01-02T10:00:00.000Z"),
                          ("u3", "2026-01-03T00:00:00.000+01:00")):  # 2026-01-02T23:00Z
            data.store.put(cur, observation(oid, effectiveDateTime="2020"), when)
    u = {"u1", "u2", "u3"}
    assert found(data, "Observation", "_lastUpdated=2026-01-02") == u  # text would have said u2 only
    assert found(data, "Observation", "_lastUpdated=2026-01-01") == ALL, "the seeded ten, at midnight UTC"
    assert found(data, "Observation", "_lastUpdated=2026-01-03") == set()
    assert found(data, "Observation", "_lastUpdated=lt2026-01-02T10:00:00Z") == ALL | {"u1"}
    assert found(data, "Observation", "_lastUpdated=2026-01-02T10:00:00Z") == {"u2"}
    assert found(data, "Observation", "_lastUpdated=2026-01-02T10:00") == {"u2"}
    assert found(data, "Observation", "_lastUpdated=gt2026-01-02T10:00:00Z") == {"u3"}
    assert found(data, "Observation", "_lastUpdated=ge2026-01-02T10:00:00Z") == {"u2", "u3"}
    assert found(data, "Observation", "_lastUpdated=sa2026-01-02T05:00:00+01:00") == {"u1", "u2", "u3"}
    assert found(data, "Observation", "_lastUpdated=eb2026-01-02") == ALL
    assert found(data, "Observation", "_lastUpdated=ne2026-01-02&date=2020") == set()
    assert found(data, "Observation", "_lastUpdated=2026-01-02T04:30:00Z,2026-01-02T23:00Z") == {"u1", "u3"}
    # stored as whole milliseconds: a bound inside a millisecond rounds the right way for each prefix
    assert found(data, "Observation", "_lastUpdated=gt2026-01-02T09:59:59.9995Z") == {"u2", "u3"}
    assert found(data, "Observation", "_lastUpdated=lt2026-01-02T10:00:00.0005Z") == ALL | {"u1", "u2"}
    assert found(data, "Observation", "_lastUpdated=ap0001-01-01") == set()  # widened beyond year 1: no error


def test_precomputed_new_versions_are_indexed_too(data: FhirData) -> None:
    """The audit spool's path (put_new) indexes dates like put does."""
    event = {"resourceType": "AuditEvent", "id": "ev1", "recorded": "2026-02-03T01:00:00+02:00",
             "entity": [{"what": {"reference": "Patient/p1"}}], "outcome": "0"}
    with data.db.transaction(write=True) as cur:
        data.store.put_new(cur, [new_version(event, canonical_resource(event), "2026-02-03T00:00:00.000Z")])
    assert found(data, "AuditEvent", "date=2026-02-02") == {"ev1"}  # 2026-02-02T23:00Z
    assert found(data, "AuditEvent", "date=2026-02-03") == set()
    assert found(data, "AuditEvent", "_lastUpdated=2026-02-03") == {"ev1"}


def test_a_stored_value_that_is_no_date_is_not_indexed(data: FhirData) -> None:
    with data.db.transaction(write=True) as cur:
        data.store.put(cur, observation("bad", effectiveDateTime="2025-02-30"), "2026-01-01T00:00:00Z")
    assert data.store.read("Observation", "bad") is not None, "stored all the same"
    with data.db.transaction() as cur:
        cur.execute("SELECT param FROM search_dates d JOIN resource_current c ON c.serial = d.serial "
                    "WHERE c.res_id = 'bad'")
        assert cur.fetchall() == []
    assert "bad" not in found(data, "Observation", "date=ne2025") | found(data, "Observation", "date=2025-02")
    assert "bad" in found(data, "Observation", "_lastUpdated=2026-01-01")


def test_an_index_from_before_search_dates_is_upgraded(data: FhirData, caplog: pytest.LogCaptureFixture) -> None:
    """An index written when dates were text in search_tokens (keyed by type and id, no search_dates):
    made again from the stored versions when the schema is ensured, dates as ranges, once."""
    with data.db.transaction(write=True) as cur:
        cur.execute("DROP TABLE search_dates")
        cur.execute("DROP TABLE search_tokens")
        cur.execute("CREATE TABLE search_tokens (res_type TEXT NOT NULL, res_id TEXT NOT NULL, param TEXT NOT NULL, "
                    "value TEXT NOT NULL)")
        cur.execute("INSERT INTO search_tokens (res_type, res_id, param, value) VALUES ('Observation', 'day', 'date', "
                    "'2025-03-04')")
    data.ensure_schema()
    assert f"search index rebuilt for {len(EFFECTIVE)} resources" in caplog.text  # a long upgrade says so
    with data.db.transaction() as cur:
        cur.execute("SELECT COUNT(*) FROM search_tokens WHERE param = 'date'")
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT COUNT(*) FROM search_dates")
        assert cur.fetchone()[0] == len(EFFECTIVE), "the date of each"
    assert found(data, "Observation", "date=2025-03-04") == {"day", "minute", "india"}
    assert found(data, "Observation", "date=gt2030") == {"ongoing"}
    with data.db.transaction(write=True) as cur:
        cur.execute("DELETE FROM search_dates WHERE serial = (SELECT serial FROM resource_current WHERE res_id = 'day')")
    caplog.clear()
    data.ensure_schema()  # once is enough: the upgraded tables are not read again
    assert "rebuil" not in caplog.text
    with data.db.transaction() as cur:
        cur.execute("SELECT COUNT(*) FROM search_dates")
        assert cur.fetchone()[0] == len(EFFECTIVE) - 1


def test_reindex_reads_in_chunks(data: FhirData, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_index, "_REINDEX_CHUNK", 3)
    with data.db.transaction(write=True) as cur:
        cur.execute("DELETE FROM search_dates")
        assert search_index.reindex(cur) == len(EFFECTIVE)
    assert found(data, "Observation", "date=ne2025-03-04") == ALL - {"day", "minute", "india"}


def test_extract_yields_a_period_as_one_range() -> None:
    rows = search_index.extract(observation("x", effectivePeriod={"start": "2025-03-01", "end": "2025-03-10"},
                                            issued="2025-03-11T08:00:00Z"))
    dates = {DateRange(*map(int, v.split("/"))) for p, v in rows if p == "date"}
    assert dates == {parse_range("2025-03-01")._replace(high=parse_range("2025-03-10").high),
                     parse_range("2025-03-11T08:00:00Z")}


@pytest.mark.parametrize("res_type, query, words", [
    ("Observation", "date=2025-02-30", "day 30 is not in 2025-02"),
    ("Observation", "date=yesterday", "prefix 'ye' is not supported"),
    ("Observation", "date=xx2025", "prefix 'xx' is not supported"),
    ("Observation", "date=eq", "'' is not a FHIR date"),
    ("Observation", "date=", "expected a value"),
    ("Observation", "date=2025-03-04T10:00:00+0530", "'2025-03-04T10:00:00+0530'"),
    ("Observation", "date=ge2025,2025-13", "month 13"),
    ("Observation", "date:missing=true", ":missing is not supported"),
    ("Patient", "birthdate=1980-02-30", "day 30"),
    ("Observation", "_lastUpdated=2026-01-01T25:00", "time out of range"),
    ("Observation", "_lastUpdated=", "expected a value"),
    ("Observation", "_lastUpdated:missing=true", ":missing is not supported"),
])
def test_bad_date_values_are_refused_naming_the_parameter(res_type: str, query: str, words: str) -> None:
    name, raw = query.split("=", 1)
    with pytest.raises(SearchError) as caught:
        parse_search(res_type, [(name, raw)], now=NOW)
    assert caught.value.param == name and words in str(caught.value) and str(caught.value).startswith(name)
