"""FHIR REST sync benchmark: resources per second pulled from a local FHIR server, validated as R4, stored, logged.

    python3 bench/fhir_sync_bench.py [--copies 5] [--page-size 1000] [--database-url URL] [--json FILE]

The server is @medplum/fhir-router (Node 20, `npm ci` at the repository root) behind the tests' small
HTTP wrapper, on 127.0.0.1, loaded with the Synthea corpus ``--copies`` times (each copy of a
patient's Bundle gets new ids from the server).  One sync of every type present then runs exactly as
`fhir-bridge sync` does: search paging, id and reference rewriting, R4 validation (fhir.resources
R4B), versioned store with the log leaf in the same transaction (one transaction per page), into a
fresh SQLite (WAL) database unless ``--database-url`` names another.  The node server shares the
machine's cores with the bridge, as it would not in production.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.fhir.runner import sync_source  # noqa: E402
from adapters.fhir.sources import FhirSource  # noqa: E402
from anchoring.log import MerkleLog  # noqa: E402
from bridge.db import open_database  # noqa: E402
from tests.adapters.fhir.conftest import MedplumServer, synthea_bundles  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
TYPES = ("Patient", "Practitioner", "Organization", "Encounter", "Observation", "Condition", "Procedure",
         "Immunization", "MedicationRequest", "DiagnosticReport", "CarePlan", "AllergyIntolerance", "Claim",
         "ExplanationOfBenefit", "ImagingStudy")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=5)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--database-url")
    parser.add_argument("--json", help="write the figures to this file too")
    args = parser.parse_args()
    server = MedplumServer()
    try:
        bundles = synthea_bundles(CORPUS)
        started = time.perf_counter()
        server.post(bundles[0])  # practitioners and organisations once
        for _ in range(args.copies):
            for bundle in bundles[1:]:
                server.post(bundle)
        load_seconds = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as tmp:
            url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
            db = open_database(url)
            MerkleLog(db, "bench.example/log").ensure_schema()
            source = FhirSource(name="bench", base_url=server.base_url, resource_types=TYPES,
                                page_size=args.page_size, timeout=120)
            began = time.perf_counter()
            report = sync_source(db, source)
            seconds = time.perf_counter() - began
            db.close()
        if report.errors:
            print("\n".join(report.errors), file=sys.stderr)
            return 1
        figures = {
            "resources": report.counts.received, "created": report.counts.created, "invalid": report.counts.invalid,
            "seconds": round(seconds, 2), "resources_per_second": round(report.counts.received / seconds, 1),
            "page_size": args.page_size, "copies": args.copies, "cores": os.cpu_count(),
            "database": "sqlite" if not args.database_url else args.database_url.split(":", 1)[0],
            "server_load_seconds": round(load_seconds, 2),
        }
        print(json.dumps(figures))
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
