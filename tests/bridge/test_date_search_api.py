"""Date search through the FHIR API: the new prefixes, an encoded and an unencoded "+" offset, and
a malformed date as a 400 OperationOutcome naming the parameter (seeded records of fhir_support)."""

from __future__ import annotations

import pytest

from bridge.api import create_app
from bridge.services import open_services

from .fhir_support import bearer, consent, put, seed, settle

OPEN = "system/*.rs"


@pytest.fixture
def client_and_token(config, signer):
    services = open_services(config)
    services._signer = signer
    seed(services)  # o1 2025-05-01, o2 2025-06-01T08:30:00Z, o3 2024-01-01 (o3: p2)
    put(services, consent("cons-p1", "p1", "org-a"), consent("cons-p2", "p2", "org-a"))
    settle(services)
    yield create_app(services=services).test_client(), bearer(services, "org-a", OPEN)
    services.close()


@pytest.mark.parametrize("query, expected", [
    ("date=sa2025-05-01", ["o2"]),
    ("date=eb2025-05-01", ["o3"]),
    ("date=ne2025-05-01", ["o2", "o3"]),
    ("date=2025-06-01T10:30:00%2B02:00", ["o2"]),  # 08:30Z
    ("date=2025-06-01T10:30:00+02:00", ["o2"]),  # "+" unencoded arrives as a space
    ("date=2025-06-01T08:30", ["o2"]),
    ("date=2025-06-01T03:30-05:00", ["o2"]),
    ("date=2025-05-31T23:59-05:00", []),  # 04:59Z on 06-01: before 08:30
    ("_lastUpdated=2026-01-02&date=2024,2025-06", ["o2", "o3"]),  # o1's version 2 is of the 3rd
])
def test_search_by_date(client_and_token, query: str, expected: list[str]) -> None:
    client, token = client_and_token
    response = client.get(f"/fhir/Observation?{query}", headers=token)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert sorted(e["resource"]["id"] for e in response.get_json(force=True).get("entry", [])) == expected


@pytest.mark.parametrize("query, param, words", [
    ("date=2025-02-30", "date", "day 30 is not in 2025-02"),
    ("date=xx2025", "date", "prefix 'xx' is not supported"),
    ("_lastUpdated=2026-13", "_lastUpdated", "month 13"),
])
def test_malformed_date_is_a_400_naming_the_parameter(client_and_token, query: str, param: str, words: str) -> None:
    client, token = client_and_token
    response = client.get(f"/fhir/Observation?{query}", headers=token)
    assert response.status_code == 400
    issue = response.get_json(force=True)["issue"][0]
    assert issue["expression"] == [param] and words in issue["diagnostics"]
