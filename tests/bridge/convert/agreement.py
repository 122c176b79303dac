"""Field-level content agreement between our conversion and the FHIR-Converter's expected Bundles.

Ids differ by design, so resources are paired by content (Patient by identifier values, Encounter
one-to-one, Observation by code in order, Immunization by vaccine code) and then compared on the key
fields below.  A field counts only where the expected resource has it; a missing resource on our
side counts every one of its expected fields as a disagreement.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.convert import Mappings, convert
from bridge.hl7.types import HL7Error


def _instant(value: Any) -> Any:
    """Dates compare as text; date-times as instants (the converter re-expresses offsets)."""
    if not isinstance(value, str) or "T" not in value:
        return value
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).isoformat()
    except ValueError:
        return value


def _first_code(concept: Any) -> Any:
    codings = (concept or {}).get("coding") or []
    return codings[0].get("code") if codings else None


def _value(obs: dict) -> Any:
    if "valueQuantity" in obs:
        return obs["valueQuantity"].get("value")
    if "valueString" in obs:
        return obs["valueString"]
    if "valueCodeableConcept" in obs:
        return _first_code(obs["valueCodeableConcept"])
    if "valueDateTime" in obs:
        return _instant(obs["valueDateTime"])
    return None


def _address(r: dict) -> Any:
    """First line, city, state, postal code, country of the first address.  Further lines are left
    out: the FHIR-Converter writes street name and dwelling number (XAD-1.2, 1.3) as extra lines where
    the IG uses ADXP extensions."""
    a = (r.get("address") or [{}])[0]
    key = (((a.get("line") or [""])[0]).strip(), (a.get("city") or "").strip(), a.get("state"),
           a.get("postalCode"), a.get("country"))
    return key if any(key) else None


def _identifier_values(r: dict) -> set[str]:
    return {i["value"] for i in r.get("identifier", []) if i.get("value")}


def _names(r: dict) -> Any:
    names = r.get("name") or []
    return tuple(sorted({(n.get("family"), (n.get("given") or [None])[0]) for n in names})) or None


def EQ(e: Any, o: Any) -> bool:  # noqa: N802 - reads as a constant in the table below
    return e == o


def _subset(e: Any, o: Any) -> bool:
    """Ours must be non-empty and among the expected values (the FHIR-Converter also folds in
    identifiers of other segments (GT1, IN2, DB1) that the V2-to-FHIR IG does not put on Patient)."""
    return bool(o) and set(o) <= set(e)


# Key fields: resource type -> field name -> (read it from a resource, compare(expected, ours)).
FIELDS: dict[str, dict[str, tuple[Callable[[dict, dict], Any], Callable[[Any, Any], bool]]]] = {
    "Patient": {
        "identifier": (lambda r, idx: _identifier_values(r) or None, _subset),
        "name": (lambda r, idx: _names(r), lambda e, o: bool(o) and set(o) <= set(e)),
        "birthDate": (lambda r, idx: r.get("birthDate"), EQ),
        "gender": (lambda r, idx: r.get("gender"), EQ),
        "address": (lambda r, idx: _address(r), EQ),
    },
    "Encounter": {
        "class": (lambda r, idx: (r.get("class") or {}).get("code"), EQ),
        "period.start": (lambda r, idx: _instant((r.get("period") or {}).get("start")), EQ),
        "period.end": (lambda r, idx: _instant((r.get("period") or {}).get("end")), EQ),
        "location": (lambda r, idx: len(r.get("location") or []) or None, lambda e, o: bool(o)),
    },
    "Observation": {
        "code": (lambda r, idx: _first_code(r.get("code")), EQ),
        "value": (lambda r, idx: _value(r), EQ),
        "unit": (lambda r, idx: (r.get("valueQuantity") or {}).get("code")
                 or (r.get("valueQuantity") or {}).get("unit"), EQ),
        "status": (lambda r, idx: r.get("status"), EQ),
        "effective": (lambda r, idx: _instant(r.get("effectiveDateTime")), EQ),
    },
    "Immunization": {
        "vaccineCode": (lambda r, idx: _first_code(r.get("vaccineCode")), EQ),
        "occurrence": (lambda r, idx: _instant(r.get("occurrenceDateTime")), EQ),
        "lotNumber": (lambda r, idx: r.get("lotNumber"), EQ),
        "status": (lambda r, idx: r.get("status"), EQ),
    },
}


def _converter_own(resource: dict) -> bool:
    """Observations the FHIR-Converter derives from PDA/ACC/... segments, coded in its own example
    code system; the IG maps those segments elsewhere, and we compare OBX observations only."""
    codings = (resource.get("code") or {}).get("coding") or []
    return resource.get("resourceType") == "Observation" and any(
        "example.com/v2-to-fhir-converter/CodeSystem/observation-code" in (c.get("system") or "") for c in codings)


def _pair(kind: str, expected: list[dict], ours: list[dict]) -> list[tuple[dict, dict | None]]:
    """Pair each expected resource with one of ours (or None)."""
    free = list(ours)
    pairs: list[tuple[dict, dict | None]] = []
    for e in expected:
        match = None
        if kind == "Patient":
            ids = _identifier_values(e)
            match = max(free, key=lambda o: len(ids & _identifier_values(o)), default=None)
        elif kind == "Observation":
            match = next((o for o in free if _first_code(o.get("code")) == _first_code(e.get("code"))), None)
        elif kind == "Immunization":
            match = next((o for o in free if _first_code(o.get("vaccineCode")) == _first_code(e.get("vaccineCode"))),
                         free[0] if free else None)
        else:
            match = free[0] if free else None
        if match is not None:
            free.remove(match)
        pairs.append((e, match))
    return pairs


def expected_pairs(corpus: Path) -> list[tuple[Path, Path]]:
    """(input message, expected Bundle) as MANIFEST.tsv pairs them ("expected FHIR: expected/...")."""
    pairs = []
    with open(corpus / "hl7v2" / "MANIFEST.tsv", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            note = row.get("notes") or ""
            if "expected FHIR:" in note:
                rel = note.split("expected FHIR:")[1].strip().split()[0].rstrip(";")
                message = corpus / row["file"]
                pairs.append((message, message.parent / rel))
    return pairs


def agreement(corpus: Path, mappings: Mappings) -> tuple[dict[str, dict[str, list[int]]], list[str]]:
    """Per resource type and field: [agreeing, compared]; plus a list of disagreements for reading."""
    import json

    stats: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    notes: list[str] = []
    for message, expected_file in expected_pairs(corpus):
        raw = message.read_bytes()
        try:
            ours = convert(raw, mappings).resources
        except HL7Error as exc:
            if exc.code == "200":  # not a supported message type: not compared
                continue
            ours = []
            notes.append(f"{message.name}: {exc.code} {exc}")
        bundle = json.loads(expected_file.read_text(encoding="utf-8"))
        expected = [e["resource"] for e in bundle.get("entry", [])]
        for kind, fields in FIELDS.items():
            exp = [r for r in expected if r.get("resourceType") == kind and not _converter_own(r)]
            our = [r for r in ours if r.get("resourceType") == kind]
            for e, o in _pair(kind, exp, our):
                for name, (get, same) in fields.items():
                    want = get(e, {})
                    if want in (None, "", ()):
                        continue
                    got = get(o, {}) if o is not None else None
                    ok = same(want, got)
                    stats[kind][name][1] += 1
                    stats[kind][name][0] += int(ok)
                    if not ok:
                        notes.append(f"{message.name} {kind}.{name}: expected {want!r}, ours {got!r}")
    return stats, notes


def rate(stats: dict[str, dict[str, list[int]]], kind: str | None = None) -> float:
    cells = [v for k, fields in stats.items() if kind in (None, k) for v in fields.values()]
    agree, total = sum(c[0] for c in cells), sum(c[1] for c in cells)
    return agree / total if total else 1.0
