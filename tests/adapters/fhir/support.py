"""Test data: Synthea transaction Bundles flattened into what a FHIR server holds."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from .conftest import synthea_bundles


def flatten(bundles: list[dict]) -> dict[str, list[dict]]:
    """Resources by type, ids taken from their ``urn:uuid`` fullUrls and references made ``Type/id``."""
    targets = {}
    for bundle in bundles:
        for entry in bundle["entry"]:
            full_url = entry["fullUrl"]
            targets[full_url] = f"{entry['resource']['resourceType']}/{full_url.removeprefix('urn:uuid:')}"
    text = json.dumps(bundles)
    for full_url, ref in targets.items():
        text = text.replace(f'"{full_url}"', f'"{ref}"')
    out: dict[str, list[dict]] = defaultdict(list)
    for bundle in json.loads(text):
        for entry in bundle["entry"]:
            resource = entry["resource"]
            resource["id"] = entry["fullUrl"].rsplit("/", 1)[-1]  # the fullUrl became Type/<uuid> above
            out[resource["resourceType"]].append(resource)
    return out


def corpus_resources(corpus: Path, patients: int = 3) -> dict[str, list[dict]]:
    bundles = [b for b in synthea_bundles(corpus) if b["entry"][0]["resource"]["resourceType"] == "Patient"]
    return flatten(bundles[:patients])


def ndjson(resources: list[dict]) -> bytes:
    return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in resources)


def versions(db) -> dict[str, int]:
    with db.transaction() as cur:
        cur.execute("SELECT res_type || '/' || res_id, COUNT(*) FROM resource_versions GROUP BY res_type, res_id")
        return {r[0]: int(r[1]) for r in cur.fetchall()}
