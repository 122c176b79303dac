"""The pipeline with the real parser, converter and FHIR validation, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.hl7.types import HL7Error
from bridge.pipeline import Incoming
from bridge.provenance import RAW_HASH_SYSTEM
from bridge.validation import validate_resource
from tests.ingest_support import open_pipeline, variants


@pytest.fixture
def adt(corpus: Path) -> bytes:
    return (corpus / "hl7v2/microsoft-FHIR-Converter/ADT-A01-02.hl7").read_bytes()


def test_message_to_versions_provenance_and_leaves(database_url: str, adt: bytes) -> None:
    with open_pipeline(database_url) as (pipeline, log):
        outcome = pipeline.ingest(adt, "test")
        assert (outcome.status, outcome.ack_code, outcome.error) == ("stored", "AA", None)
        message = pipeline.inbox.get(outcome.message_id)
        assert message.status == "stored" and message.versions == outcome.versions
        assert pipeline.inbox.raw(outcome.message_id) == adt  # the raw bytes exactly as received

        *produced, provenance_ref = outcome.versions
        kind, rid, _, version = provenance_ref.split("/")
        provenance = pipeline.store.read(kind, rid, int(version)).resource
        validate_resource(provenance)
        assert [t["reference"] for t in provenance["target"]] == produced
        assert provenance["entity"][0]["what"]["identifier"] == {"system": RAW_HASH_SYSTEM, "value": message.content_sha256}

        assert log.queued() == len(outcome.versions)  # every version's leaf, in the same transaction
        log.sequence()
        for ref in outcome.versions:
            kind, rid, _, version = ref.split("/")
            stored = pipeline.store.read(kind, rid, int(version))
            assert log.entry(pipeline.store.leaf_index(log, stored)) == stored.leaf_data


def test_same_message_again_no_new_row_no_new_version(database_url: str, adt: bytes) -> None:
    with open_pipeline(database_url) as (pipeline, log):
        first = pipeline.ingest(adt)
        versions = pipeline.store.count()
        again, twice = pipeline.ingest_many([Incoming(adt), Incoming(adt)])
        assert again.duplicate and twice.duplicate
        assert again.message_id == twice.message_id == first.message_id and again.ack_code == "AA"
        assert pipeline.inbox.counts() == {"stored": 1} and pipeline.store.count() == versions
        # a new control id with the same content: a new message row, but no new resource version
        [other] = variants(adt, 1, "NEW")
        [base] = variants(adt, 1, "NEW2")
        pipeline.ingest(base)
        count = pipeline.store.count()
        outcome = pipeline.ingest(other.replace(b"NEW-0", b"NEW-0b"))
        assert outcome.status == "stored"
        assert pipeline.inbox.counts() == {"stored": 3}
        assert pipeline.store.count() - count <= 1 + len([v for v in outcome.versions if v.endswith("/_history/1")])


def test_unparseable_unmappable_and_invalid_are_kept_with_reasons(database_url: str, adt: bytes) -> None:
    with open_pipeline(database_url) as (pipeline, _):
        garbage = pipeline.ingest(b"\x00\x01\x02 hello")
        assert (garbage.status, garbage.ack_code, garbage.error.code) == ("error", "AR", "100")
        unsupported = pipeline.ingest(adt.replace(b"ADT^A01", b"ZZZ^Z99", 1))
        assert unsupported.status == "error" and unsupported.ack_code == "AR"
        assert unsupported.error.code in {"200", "201"}
        assert pipeline.inbox.counts() == {"error": 2}
        listed = pipeline.inbox.list(status="error")
        assert all(m.error_text for m in listed)


def test_group_with_one_bad_message_stores_the_others(database_url: str, adt: bytes) -> None:
    with open_pipeline(database_url) as (pipeline, _):
        good = variants(adt, 3, "G")
        outcomes = pipeline.ingest_many([Incoming(good[0]), Incoming(b"MSH|broken"), Incoming(good[1]), Incoming(good[2])])
        assert [o.ack_code for o in outcomes] == ["AA", outcomes[1].ack_code, "AA", "AA"]
        assert outcomes[1].ack_code in ("AE", "AR") and outcomes[1].status == "error"
        assert pipeline.inbox.counts() == {"stored": 3, "error": 1}


# The database refuses to store one patient (a real trigger): the group's single commit fails.
REFUSE_PATIENT = {
    "sqlite": ["CREATE TRIGGER refuse_patient BEFORE INSERT ON resource_versions "
               "WHEN NEW.res_type = 'Patient' AND CAST(NEW.content AS TEXT) LIKE '%REFUSE1%' "
               "BEGIN SELECT RAISE(ABORT, 'injected'); END"],
    "postgresql": [
        "CREATE FUNCTION refuse_patient() RETURNS trigger AS $$ BEGIN IF NEW.res_type = 'Patient' AND "
        "convert_from(NEW.content, 'UTF8') LIKE '%REFUSE1%' THEN RAISE EXCEPTION 'injected'; END IF; "
        "RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER refuse_patient BEFORE INSERT ON resource_versions FOR EACH ROW EXECUTE FUNCTION refuse_patient()",
    ],
}


def test_a_group_that_cannot_be_committed_is_kept_then_stored_message_by_message(database_url: str, adt: bytes) -> None:
    with open_pipeline(database_url) as (pipeline, log):
        with pipeline.db.transaction(write=True) as cur:
            for statement in REFUSE_PATIENT[pipeline.db.dialect]:
                cur.execute(statement)
        group = variants(adt, 3, "REFUSE")
        outcomes = pipeline.ingest_many([Incoming(m) for m in group])
        assert [o.status for o in outcomes] == ["stored", "error", "stored"]
        refused = outcomes[1]
        assert refused.committed and refused.ack_code == "AE" and "reprocess" in refused.error.text
        assert pipeline.inbox.raw(refused.message_id) == group[1]  # kept, though nothing of it is stored
        assert pipeline.inbox.counts() == {"stored": 2, "error": 1}
        assert log.queued() == len({v for o in outcomes for v in o.versions})  # no leaf of the refused message

        with pipeline.db.transaction(write=True) as cur:
            cur.execute("DROP TRIGGER refuse_patient" + (" ON resource_versions" if pipeline.db.dialect == "postgresql" else ""))
        again = pipeline.reprocess(refused.message_id)
        assert again.status == "stored" and again.ack_code == "AA"
        assert pipeline.inbox.counts() == {"stored": 3}


def test_validation_error_names_the_path() -> None:
    with pytest.raises(HL7Error) as caught:
        validate_resource({"resourceType": "Patient", "id": "p", "birthDate": "1st of May", "gender": ["x"]})
    assert caught.value.code == "207" and caught.value.location == "Patient.birthDate"
    assert "Patient/p is not valid FHIR R4" in caught.value.text and "reprocess" in caught.value.text


def test_reprocess_after_a_mapping_fix(database_url: str, adt: bytes, tmp_path: Path) -> None:
    """A message of a type the shipped mappings lack is kept as an error; a site override adds the
    mapping; reprocess stores it, and reprocessing again creates no new version."""
    custom = adt.replace(b"ADT^A01^ADT_A01", b"ADT^Z01^ADT_A01", 1).replace(b"ADT^A01", b"ADT^Z01", 1)
    with open_pipeline(database_url) as (pipeline, _):
        failed = pipeline.ingest(custom)
        assert failed.status == "error"
    override = tmp_path / "site"
    override.mkdir()
    (override / "z01.yaml").write_text(OVERRIDE)
    with open_pipeline(database_url, str(override)) as (pipeline, _):
        fixed = pipeline.reprocess(failed.message_id)
        assert (fixed.status, fixed.ack_code) == ("stored", "AA"), fixed.error
        assert pipeline.inbox.get(failed.message_id).status == "stored"
        count = pipeline.store.count()
        assert pipeline.reprocess(failed.message_id).versions == fixed.versions
        assert pipeline.store.count() == count
        assert pipeline.inbox.counts() == {"stored": 1}


# A site override (mapping data, no code): the site's custom event ADT^Z01 maps like a registration.
OVERRIDE = """
messages:
  site-z01:
    events: ["ADT^Z01"]
    required_segments: [PID]
    segments: {PID: PID, PV1: PV1}
"""


def test_worker_processes_give_the_same_results(adt: bytes, tmp_path: Path) -> None:
    """Conversion in worker processes (ingest_workers): errors and resources cross intact."""
    with open_pipeline(f"sqlite:///{tmp_path / 'w.db'}", workers=1) as (pipeline, _):
        good = variants(adt, 3, "W")
        outcomes = pipeline.ingest_many([Incoming(good[0]), Incoming(adt.replace(b"ADT^A01", b"ZZZ^Z99", 1)),
                                         Incoming(good[1]), Incoming(good[2])])
        assert [o.status for o in outcomes] == ["stored", "error", "stored", "stored"]
        assert outcomes[1].error.code in {"200", "201"} and outcomes[1].error.text
    with open_pipeline(f"sqlite:///{tmp_path / 'single.db'}") as (single, _):
        same = single.ingest(good[0])
    assert [v.rsplit("/", 2)[0] for v in same.versions] == [v.rsplit("/", 2)[0] for v in outcomes[0].versions]


def test_a_repeated_resource_is_validated_once_and_a_changed_type_is_not_taken_for_it() -> None:
    """The cache of checked resources finds a repeat by its exact value (types and key order
    included) or by its content key; 1, 1.0 and True are different content."""
    from bridge import ack
    from bridge import pipeline as pipeline_module
    from bridge.hl7.types import Conversion
    from bridge.store import content_key

    checked: list[dict] = []
    header = ack.best_effort_header(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5")

    def validate(resource: dict) -> None:
        checked.append(resource)

    def run(resources: list[dict]) -> list:
        return pipeline_module.prepare(b"", lambda _: Conversion(header, resources), validate).canonical

    pipeline_module.forget_checked()
    try:
        one = {"resourceType": "Basic", "id": "b1", "extension": [{"url": "u", "valueInteger": 1}]}
        first = run([one])[0]
        assert run([dict(one)])[0] is first and len(checked) == 1  # the same value: no second check
        reordered = {"id": "b1", "extension": [{"valueInteger": 1, "url": "u"}], "resourceType": "Basic"}
        assert run([reordered])[0] is first and len(checked) == 1  # found by its content key
        assert run([reordered])[0] is first and len(checked) == 1  # and now by its exact value too
        for other in (1.5, True, "1"):
            changed = {**one, "extension": [{"url": "u", "valueInteger": other}]}
            got = run([changed])[0]
            assert got.key == content_key(changed) != first.key and checked[-1] is changed
        assert len(checked) == 4
    finally:
        pipeline_module.forget_checked()



def _exact_tries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each resource whose exact key is computed (its id)."""
    from bridge import pipeline as pipeline_module

    tried: list[str] = []
    real = pipeline_module._exact_key

    def spy(resource: dict) -> bytes | None:
        tried.append(resource["id"])
        return real(resource)

    monkeypatch.setattr(pipeline_module, "_exact_key", spy)
    return tried


def test_exact_keys_are_left_out_for_a_type_whose_content_never_repeats(monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge import ack
    from bridge import pipeline as pipeline_module
    from bridge.hl7.types import Conversion

    use = pipeline_module._ExactKeyUse
    header = ack.best_effort_header(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5")
    validated: list[str] = []

    def run(resources: list[dict]) -> list:
        return pipeline_module.prepare(b"", lambda _: Conversion(header, resources), lambda r: validated.append(r["id"])).canonical

    pipeline_module.forget_checked()
    tried = _exact_tries(monkeypatch)
    try:
        doctor = {"resourceType": "Practitioner", "id": "d1", "name": [{"family": "Who"}]}
        for n in range(use.WINDOW + 4 * use.PROBE_EVERY):
            run([{"resourceType": "Basic", "id": f"b{n}"}, dict(doctor)])
        basic = [t for t in tried if t.startswith("b")]
        # every one in the first window, then one in PROBE_EVERY
        assert basic[: use.WINDOW] == [f"b{n}" for n in range(use.WINDOW)]
        assert len(basic) == use.WINDOW + 4
        # the repeated doctor keeps its exact key: tried every time, validated once
        assert tried.count("d1") == use.WINDOW + 4 * use.PROBE_EVERY and validated.count("d1") == 1
        # content met before is still not validated again without its exact key: the content key finds it
        before = len(validated)
        again = run([{"resourceType": "Basic", "id": "b1"}])[0]
        assert len(validated) == before and again.res_id == "b1"
    finally:
        pipeline_module.forget_checked()


def test_a_type_that_starts_repeating_gets_its_exact_key_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge import ack
    from bridge import pipeline as pipeline_module
    from bridge.hl7.types import Conversion

    use = pipeline_module._ExactKeyUse
    header = ack.best_effort_header(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5")

    def run(resource: dict) -> None:
        pipeline_module.prepare(b"", lambda _: Conversion(header, [resource]), lambda r: None)

    pipeline_module.forget_checked()
    tried = _exact_tries(monkeypatch)
    try:
        for n in range(use.WINDOW):
            run({"resourceType": "Basic", "id": f"new{n}"})  # judged not worth it
        tried.clear()
        for _ in range(use.WINDOW * use.PROBE_EVERY):
            run({"resourceType": "Basic", "id": "same"})  # the probes find it every time
        assert len(tried) == use.WINDOW  # one in PROBE_EVERY while judged not worth it
        tried.clear()
        for _ in range(10):
            run({"resourceType": "Basic", "id": "same"})
        assert len(tried) == 10  # worth it again: every one
    finally:
        pipeline_module.forget_checked()


def test_a_single_message_goes_to_the_workers_too(adt: bytes, tmp_path: Path) -> None:
    from anchoring.log import MerkleLog
    from bridge.db import open_database
    from bridge.pipeline import Pipeline, prepare

    db = open_database(f"sqlite:///{tmp_path / 'one.db'}")
    MerkleLog(db, "test.example/log").ensure_schema()
    calls: list[int] = []

    def convert(raw: bytes):  # type: ignore[no-untyped-def]
        raise AssertionError("converted in the pipeline's process")

    def workers(raws):  # type: ignore[no-untyped-def]
        from bridge.convert import convert as real
        from bridge.convert import load_mappings

        calls.append(len(raws))
        mappings = load_mappings(None)
        return [prepare(raw, lambda r: real(r, mappings)) for raw in raws]

    pipeline = Pipeline(db, convert, prepare_many=workers)
    pipeline.ensure_schema()
    try:
        assert pipeline.ingest(adt).status == "stored" and calls == [1]
    finally:
        db.close()


def test_warnings_and_unmapped_with_any_text_are_kept(database_url: str) -> None:
    """The inbox writes its lists with orjson, which refuses a lone surrogate; such text (from a
    byte decoded with surrogateescape) is still kept, through json."""
    from bridge.inbox import Inbox

    with open_pipeline(database_url) as (pipeline, _):
        with pipeline.db.transaction(write=True) as cur:
            message_id, _ = Inbox.receive(cur, b"MSH|^~\\&|A", "A", "1", "ADT^A01", "test", "2026-12-02T00:00:00Z")
            Inbox.mark_stored(cur, message_id, ["Patient/p/_history/1"], ["ZPI\udcff"], ["caf\u00e9 \udcfe"],
                              "2026-12-02T00:00:01Z")
        kept = pipeline.inbox.get(message_id)
        assert (kept.versions, kept.unmapped, kept.warnings) == (
            ["Patient/p/_history/1"], ["ZPI\udcff"], ["caf\u00e9 \udcfe"])
