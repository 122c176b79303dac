"""REST sync against a real FHIR server that is not ours: @medplum/fhir-router loaded with the Synthea corpus."""

from __future__ import annotations

import json

from adapters.fhir.runner import sync_source
from adapters.fhir.state import SyncState
from anchoring.log import MerkleLog
from bridge.store import ResourceStore

from .conftest import source, synthea_bundles, wait_next_second

TYPES = ("Patient", "Practitioner", "Organization", "Encounter", "Observation", "Condition", "Procedure",
         "Immunization", "MedicationRequest", "DiagnosticReport", "CarePlan", "AllergyIntolerance", "Claim",
         "ExplanationOfBenefit", "ImagingStudy")


def references_in(value) -> list[str]:
    if isinstance(value, dict):
        found = [value["reference"]] if isinstance(value.get("reference"), str) else []
        return found + [r for k, v in value.items() if k != "reference" for r in references_in(v)]
    if isinstance(value, list):
        return [r for v in value for r in references_in(v)]
    return []


def stored_ids(db) -> dict[str, int]:
    with db.transaction() as cur:
        cur.execute("SELECT res_type || '/' || res_id, MAX(version) FROM resource_versions GROUP BY res_type, res_id")
        return {r[0]: int(r[1]) for r in cur.fetchall()}


def test_full_then_incremental_sync_picks_up_exactly_the_changes(loaded_medplum, store_db, corpus):
    expected = sum(len(b["entry"]) for b in synthea_bundles(corpus))
    wait_next_second()
    src = source(loaded_medplum.base_url, TYPES, page_size=200)
    first = sync_source(store_db, src)
    assert first.errors == [] and first.faults == []
    assert first.counts.received == expected == 1069
    assert first.counts.created == expected and first.counts.invalid == 0
    versions = stored_ids(store_db)
    assert len(versions) == expected and set(versions.values()) == {1}
    assert all(key.split("/")[1].startswith("ehr-") for key in versions), "ids are namespaced by the source"

    # references were rewritten consistently: every Type/id reference, in every type, points at a stored resource
    store = ResourceStore(store_db)
    references = [ref for key in versions for ref in references_in(store.read(*key.split("/")).resource)]
    assert len(references) > 2000
    dangling = [ref for ref in references if "/" in ref and not ref.startswith("#") and ref not in versions]
    assert dangling == []

    # nothing changed: a second sync fetches nothing new
    wait_next_second()
    again = sync_source(store_db, src)
    assert again.counts.received == 0 and again.counts.created == 0 and not again.errors

    # change the source: 3 updates, 1 unchanged re-save (new source version, same content), 2 creations
    observations = loaded_medplum.search("Observation", _count="3")
    for obs in observations:
        obs["status"] = "amended"
        loaded_medplum.put(obs)
    patient = loaded_medplum.search("Patient", _count="1")[0]
    patient["meta"] = {k: v for k, v in patient["meta"].items() if k not in ("versionId", "lastUpdated")}
    loaded_medplum.put(patient)
    created = [loaded_medplum.create({"resourceType": "Patient", "gender": "female", "name": [{"family": f"New{i}"}]})
               for i in range(2)]
    wait_next_second()
    third = sync_source(store_db, src)
    assert not third.errors
    assert third.counts.received == 6, "exactly the changed resources are fetched"
    assert third.counts.created == 5 and third.counts.unchanged == 1
    changed = {f"Observation/ehr-{o['id']}" for o in observations} | {f"Patient/ehr-{p['id']}" for p in created}
    assert {v.rsplit("/_history/", 1)[0] for v in third.counts.versions} == changed
    after = stored_ids(store_db)
    assert len(after) == expected + 2
    assert all(after[f"Observation/ehr-{o['id']}"] == 2 for o in observations)
    amended = store.read("Observation", f"ehr-{observations[0]['id']}").resource
    assert amended["status"] == "amended" and amended["meta"]["versionId"] == "2"
    # every new version is in the store and, once sequenced, in the log
    with store_db.transaction() as cur:
        cur.execute("SELECT COUNT(*) FROM resource_versions")
        assert int(cur.fetchone()[0]) == expected + 5
    log = MerkleLog(store_db, "test.example/log")
    while log.sequence():
        pass
    assert log.size() == expected + 5
    marks = SyncState(store_db).watermarks("ehr")
    assert set(marks) == set(TYPES)
    assert json.loads(json.dumps(third.as_dict()))["status"] == "ok"
