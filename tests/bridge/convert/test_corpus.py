"""Every corpus message through split_batch/parse_header/convert, FHIR R4 validation of the output,
and content agreement with the FHIR-Converter's expected Bundles."""

from __future__ import annotations

from collections import Counter

import pytest
from fhir.resources.R4B import get_fhir_model_class

from bridge.convert import convert, load_mappings
from bridge.hl7.parser import parse_header, split_batch
from bridge.hl7.types import HL7Error

from .agreement import agreement, expected_pairs, rate

MAPPINGS = load_mappings()


def _messages(corpus):
    """(file, message bytes or the HL7Error of its batch envelope) for every corpus file."""
    for path in sorted((corpus / "hl7v2").rglob("*.hl7")):
        try:
            for message in split_batch(path.read_bytes()):
                yield path, message
        except HL7Error as exc:
            yield path, exc


def test_every_corpus_message_converts_or_says_why(corpus):
    counts: Counter[str] = Counter()
    files = set()
    for path, message in _messages(corpus):
        files.add(path)
        if isinstance(message, HL7Error):
            assert message.code and message.location and message.text
            counts[f"batch error {message.code}"] += 1
            continue
        try:
            parse_header(message)
        except HL7Error as exc:
            assert exc.code and exc.location and exc.text
        try:
            conversion = convert(message, MAPPINGS)
        except HL7Error as exc:
            assert exc.code and exc.location and exc.text, path
            counts[f"HL7Error {exc.code}"] += 1
            continue
        assert conversion.resources, path
        counts["converted"] += 1
    print(f"\n{len(files)} corpus files: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    assert len(files) >= 200
    assert counts["converted"] >= 90


def test_every_resource_validates_as_fhir_r4(corpus):
    """What the ingest side will validate before commit: fhir.resources R4B models."""
    seen: Counter[str] = Counter()
    failures = []
    for path, message in _messages(corpus):
        if isinstance(message, HL7Error):
            continue
        try:
            conversion = convert(message, MAPPINGS)
        except HL7Error:
            continue
        for resource in conversion.resources:
            seen[resource["resourceType"]] += 1
            try:
                get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            except Exception as exc:  # pydantic's ValidationError and friends
                failures.append(f"{path.name} {resource['resourceType']}: {str(exc)[:300]}")
    print("\nvalidated: " + ", ".join(f"{k} {v}" for k, v in sorted(seen.items())))
    assert not failures, "\n".join(failures[:20])
    assert {"Patient", "Encounter", "Observation", "Immunization", "DiagnosticReport", "ServiceRequest",
            "MedicationRequest", "AllergyIntolerance", "Condition", "Appointment", "DocumentReference",
            "Practitioner", "Organization", "Location"} <= set(seen)


def test_manifest_pairs_inputs_with_expected_bundles(corpus):
    pairs = expected_pairs(corpus)
    assert len(pairs) >= 130
    assert all(message.exists() and expected.exists() for message, expected in pairs)


def test_agreement_with_the_fhir_converter(corpus):
    stats, notes = agreement(corpus, MAPPINGS)
    lines = []
    for kind, fields in stats.items():
        detail = ", ".join(f"{name} {a}/{t}" for name, (a, t) in fields.items())
        lines.append(f"{kind}: {rate(stats, kind):.1%} ({detail})")
    print("\nagreement " + f"{rate(stats):.1%}\n" + "\n".join(lines))
    print("disagreements:\n  " + "\n  ".join(notes[:30]))
    for kind in ("Patient", "Encounter", "Observation", "Immunization"):
        assert sum(t for _, t in stats[kind].values()) > 0, f"no {kind} compared"
    assert rate(stats) >= 0.95


@pytest.mark.parametrize("name", ["ADT-A01-01", "ORU-R01-01", "VXU-V04-01", "SIU-S12-01"])
def test_conversion_is_deterministic(corpus, name):
    raw = (corpus / f"hl7v2/microsoft-FHIR-Converter/{name}.hl7").read_bytes()
    assert convert(raw, MAPPINGS).resources == convert(raw, MAPPINGS).resources
