"""The ingest benchmark's messages differ as a feed's do (tests.ingest_support.feed_variants), so a
cache of repeated field values cannot flatter it: what must differ does, what repeats does so from
pools, and every message still converts to the template's resources."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pytest

from bridge.convert import convert, load_mappings
from tests.ingest_support import feed_variants

TEMPLATES = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "hl7v2" / "microsoft-FHIR-Converter"
MAPPINGS = load_mappings()


@pytest.mark.parametrize("name", ["ADT-A01-02.hl7", "ORU-R01-01.hl7"])
def test_each_message_has_its_own_patient_times_and_numbers_and_staff_come_from_pools(name: str) -> None:
    template = (TEMPLATES / name).read_bytes()
    count = 150
    conversions = [convert(m, MAPPINGS) for m in feed_variants(template, count, "T")]
    first = convert(template, MAPPINGS)
    kinds = Counter(r["resourceType"] for r in first.resources)
    assert all(Counter(r["resourceType"] for r in c.resources) == kinds for c in conversions)

    def distinct(kind: str, key) -> int:  # type: ignore[no-untyped-def]
        return len({repr(key(r)) for c in conversions for r in c.resources if r["resourceType"] == kind})

    for element in ("name", "birthDate", "address", "identifier"):
        assert distinct("Patient", lambda r, e=element: r.get(e)) == count, element
    assert distinct("Encounter", lambda r: r.get("period")) == count
    assert distinct("Encounter", lambda r: r.get("identifier")) == count
    if kinds["Observation"]:
        assert distinct("Observation", lambda r: r.get("effectiveDateTime")) == count
        assert distinct("Observation", lambda r: r.get("valueQuantity")) > 100
    # doctors: a pool per role, and an id keeps one name in every message
    names: dict[str, set[str]] = defaultdict(set)
    for c in conversions:
        for r in c.resources:
            if r["resourceType"] == "Practitioner":
                names[r["id"]].add(repr(r.get("name")))
    assert count < len(names) <= 60 * 7  # six pools of 60, and the doctors the template names elsewhere
    assert all(len(n) == 1 for n in names.values())
