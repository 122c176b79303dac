"""Keyed resource ids (bridge.id_key, bridge.convert.ids): opaque to anyone without the site's key,
deterministic for the bridge, and a store never switches keys silently."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from anchoring.log import MerkleLog
from bridge.cli import main
from bridge.convert import convert, load_mappings
from bridge.convert.ids import make_id
from bridge.db import open_database
from bridge.errors import ConfigError
from bridge.id_key import KEY_SIZE, resource_id_key_file
from bridge.pipeline import pipeline_from_config
from bridge.prepare_pool import PreparePool
from bridge.store import ResourceStore

KEY_A, KEY_B = b"a" * KEY_SIZE, b"b" * KEY_SIZE


@pytest.fixture(scope="module")
def adt(corpus: Path) -> bytes:
    return (corpus / "hl7v2/microsoft-FHIR-Converter/ADT-A01-02.hl7").read_bytes()


def _patient_id(raw: bytes, key: bytes | None) -> str:
    [found] = [r["id"] for r in convert(raw, load_mappings(None), key).resources if r["resourceType"] == "Patient"]
    return found


def test_keyed_ids_cannot_be_computed_without_the_key_and_still_join_feeds(adt: bytes):
    unkeyed, keyed = _patient_id(adt, None), _patient_id(adt, KEY_A)
    assert keyed != unkeyed and keyed != _patient_id(adt, KEY_B)
    assert make_id("Patient", "x", KEY_A) == make_id("Patient", "x", KEY_A) != make_id("Patient", "x")
    # the same person from another feed (another sender and control id): the same Patient
    other_feed = adt.replace(b"|ADTApp|", b"|OTHERAPP|", 1).replace(b"|MSG00001|", b"|FEED2-1|", 1)
    assert b"OTHERAPP" in other_feed and b"FEED2-1" in other_feed
    assert _patient_id(other_feed, KEY_A) == keyed
    refs = json.dumps(convert(adt, load_mappings(None), KEY_A).resources)
    assert f"Patient/{keyed}" in refs and f"Patient/{unkeyed}" not in refs, "references follow the keyed ids"


def test_a_new_store_gets_a_key_and_keeps_it(config):
    db = open_database(config.resolved_database_url)
    path = config.resolved_resource_id_key_file
    try:
        assert resource_id_key_file(db, path) == path
        key = path.read_bytes()
        assert len(key) == KEY_SIZE and path.stat().st_mode & 0o777 == 0o600
        assert resource_id_key_file(db, path) == path and path.read_bytes() == key, "made once"
        path.write_bytes(KEY_B)
        with pytest.raises(ConfigError, match="not the key this store's ids were made with"):
            resource_id_key_file(db, path)
        path.unlink()
        with pytest.raises(ConfigError, match="missing"):
            resource_id_key_file(db, path)
    finally:
        db.close()


def test_a_store_with_unkeyed_resources_keeps_unkeyed_ids(config, adt: bytes, caplog):
    db = open_database(config.resolved_database_url)
    try:
        MerkleLog(db, "test.example/log").ensure_schema()
        pipeline = pipeline_from_config(db)  # as before keyed ids
        assert pipeline.ingest(adt).ack_code == "AA"
        caplog.set_level(logging.WARNING)
        path = config.resolved_resource_id_key_file
        assert resource_id_key_file(db, path) is None and not path.exists()
        assert "without a key" in caplog.text
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(KEY_A)  # a key appearing later changes nothing: the store's ids stay as they are
        assert resource_id_key_file(db, path) is None
    finally:
        db.close()


def test_ingest_makes_keyed_ids_in_process_and_in_the_workers_alike(tmp_path: Path, adt: bytes, capsys):
    data = tmp_path / "data"
    message = tmp_path / "adt.hl7"
    message.write_bytes(adt)
    assert main(["--data-dir", str(data), "ingest", str(message)]) == 0
    capsys.readouterr()
    key = (data / "resource-id.key").read_bytes()
    db = open_database(f"sqlite:///{data / 'fhir-bridge.db'}")
    try:
        stored = ResourceStore(db).read("Patient", _patient_id(adt, key))
        assert stored is not None and ResourceStore(db).read("Patient", _patient_id(adt, None)) is None
    finally:
        db.close()
    pool = PreparePool(1, None, data / "resource-id.key")
    try:
        [prepared] = pool([adt])
    finally:
        pool.close()
    assert {c.res_id for c in prepared.canonical if c.res_type == "Patient"} == {_patient_id(adt, key)}
