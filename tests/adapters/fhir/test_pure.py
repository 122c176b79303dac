"""Pure parts: retry policy and Retry-After, rate limit, watermarks, NDJSON lines, ids and references, sources."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.fhir import policy
from adapters.fhir.errors import SourceConfigError
from adapters.fhir.references import local_id, rewrite_resource
from adapters.fhir.rest import matches, next_link
from adapters.fhir.sources import parse_sources

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_backoff_doubles_is_capped_and_gives_up():
    p = policy.RetryPolicy(max_attempts=4, backoff_base=0.5, backoff_max=1.5, jitter=0.0)
    assert [p.delay(a) for a in (1, 2, 3, 4)] == [0.5, 1.0, 1.5, None]
    assert p.delay(1, retry_after=30) == 1.5, "Retry-After is honoured, within backoff_max"
    assert p.delay(2, retry_after=1.0) == 1.0


def test_jitter_stays_within_bounds():
    p = policy.RetryPolicy(backoff_base=1.0, jitter=0.1)
    assert p.delay(1, rand=0.0) == pytest.approx(0.9) and p.delay(1, rand=1.0) == pytest.approx(1.1)


@pytest.mark.parametrize("value, seconds", [
    ("7", 7.0), ("0", 0.0), ("Sun, 01 Mar 2026 12:00:30 GMT", 30.0), ("Sun, 01 Mar 2026 11:00:00 GMT", 0.0),
    ("soon", None), ("", None), (None, None),
])
def test_retry_after(value, seconds):
    assert policy.parse_retry_after(value, NOW) == seconds


def test_retryable_statuses():
    assert all(policy.retryable(s) for s in (429, 500, 502, 503, 504, 408))
    assert not any(policy.retryable(s) for s in (400, 401, 403, 404, 410, 422))


def test_rate_limit():
    assert policy.rate_limit_wait(None, 10, 5.0) == 0
    assert policy.rate_limit_wait(5.0, 10, 5.02) == pytest.approx(0.08)
    assert policy.rate_limit_wait(5.0, 0, 5.0) == 0


def test_watermark_never_passes_the_pass_start_nor_goes_back():
    assert policy.next_watermark(None, "2026-03-01T10:00:00.000Z", "2026-03-01T11:00:00Z") == "2026-03-01T10:00:00.000Z"
    assert policy.next_watermark(None, "2026-03-01T10:00:00.500Z", "Sun, 01 Mar 2026 10:00:00 GMT") == \
        "2026-03-01T10:00:00.000Z", "changes during the pass are asked for again"
    assert policy.next_watermark("2026-03-02T00:00:00Z", "2026-03-01T10:00:00Z", None) == "2026-03-02T00:00:00Z"
    assert policy.next_watermark("2026-03-01T00:00:00Z", None, "2026-03-05T00:00:00Z") == "2026-03-01T00:00:00Z"
    assert policy.since_parameter("2026-03-01T10:00:00+01:00", 2) == "2026-03-01T08:59:58.000Z"


@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=20), st.integers(1, 50))
def test_split_lines_reassembles_any_chunking(lines, size):
    data = b"".join(line + b"\n" for line in lines)
    out, rest = [], b""
    for i in range(0, len(data), size):
        done, rest = policy.split_lines(rest + data[i:i + size])
        out.extend(done)
    assert out == lines and rest == b""


def test_ids_are_namespaced_deterministic_and_valid():
    assert local_id("ehr", "Patient", "123", False) == "ehr-123"
    assert local_id("ehr", "Patient", "123", True) == "123"
    long = "a" * 64
    hashed = local_id("ehr", "Patient", long, False)
    assert hashed == local_id("ehr", "Patient", long, False) and len(hashed) <= 64 and hashed.startswith("ehr-h")
    assert hashed != local_id("ehr", "Observation", long, False)


def test_references_are_rewritten_consistently():
    resource = {"resourceType": "Observation", "id": "o1",
                "subject": {"reference": "Patient/p1"},
                "performer": [{"reference": "https://ehr.example/fhir/Practitioner/d1"},
                              {"reference": "https://other.example/fhir/Practitioner/d1"}],
                "basedOn": [{"reference": "ServiceRequest/s1/_history/3"}],
                "hasMember": [{"reference": "#inline"}, {"reference": "urn:uuid:abc"}],
                "derivedFrom": [{"reference": "Observation?code=1"}],
                "contained": [{"resourceType": "Specimen", "id": "inline", "subject": {"reference": "Patient/p1"}}]}
    out = rewrite_resource(resource, "https://ehr.example/fhir/", "ehr", False)
    assert out["id"] == "ehr-o1" and out["subject"]["reference"] == "Patient/ehr-p1"
    assert [p["reference"] for p in out["performer"]] == ["Practitioner/ehr-d1", "https://other.example/fhir/Practitioner/d1"]
    assert out["basedOn"][0]["reference"] == "ServiceRequest/ehr-s1"
    assert [h["reference"] for h in out["hasMember"]] == ["#inline", "urn:uuid:abc"]
    assert out["derivedFrom"][0]["reference"] == "Observation?code=1"
    assert out["contained"][0]["id"] == "inline" and out["contained"][0]["subject"]["reference"] == "Patient/ehr-p1"
    assert resource["id"] == "o1", "the input is not changed"
    kept = rewrite_resource(resource, "https://ehr.example/fhir", "ehr", True)
    assert kept["subject"] == resource["subject"] and kept["id"] == "o1"


def test_paging_helpers():
    bundle = {"link": [{"relation": "self", "url": "x"}, {"relation": "next", "url": "Patient?_offset=20"}],
              "entry": [{"resource": {"resourceType": "Patient", "id": "1"}},
                        {"resource": {"resourceType": "Patient", "id": "2"}, "search": {"mode": "include"}},
                        {"resource": {"resourceType": "OperationOutcome", "issue": [{"diagnostics": "slow"}]},
                         "search": {"mode": "outcome"}}]}
    assert next_link(bundle, "https://ehr.example/fhir/Patient?_count=20") == "https://ehr.example/fhir/Patient?_offset=20"
    assert next_link({"link": []}, "x") is None
    found, notes = matches(bundle)
    assert [r["id"] for r in found] == ["1"] and notes == ["slow"]


def test_sources_parse_and_say_what_is_wrong():
    sources = parse_sources({"fhir_sources": [
        {"name": "ehr", "base_url": "https://ehr.example/fhir", "resource_types": ["Patient"], "interval": 60,
         "auth": {"type": "smart", "client_id": "b", "private_key_file": "/k.pem", "algorithm": "ES384"}}]})
    assert sources[0].interval == 60.0 and sources[0].prefix == "ehr" and sources[0].auth.type == "smart"
    bad = [
        ({"name": "x", "base_url": "ftp://x", "resource_types": ["Patient"]}, "base_url"),
        ({"name": "x", "base_url": "http://x"}, "resource_types is required"),
        ({"name": "x", "base_url": "http://x", "resource_types": ["Patient"], "auth": {"type": "basic",
          "username": "u", "password": "p"}}, "secrets go in"),
        ({"name": "x", "base_url": "http://x", "resource_types": ["Patient"], "auth": {"type": "kerberos"}}, "auth type"),
        ({"name": "x", "base_url": "http://x", "resource_types": ["Patient"], "pagesize": 5}, "unknown settings pagesize"),
        ({"name": "bad name", "base_url": "http://x", "resource_types": ["Patient"]}, "name must be"),
    ]
    for table, words in bad:
        with pytest.raises(SourceConfigError, match=words):
            parse_sources({"fhir_sources": [table]})
    with pytest.raises(SourceConfigError, match="unique"):
        parse_sources({"fhir_sources": [bad[0][0] | {"base_url": "http://x"}] * 2})
