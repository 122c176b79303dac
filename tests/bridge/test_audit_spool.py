"""The AuditEvent spool (bridge.audit_spool): durable before the response, stored exactly once."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bridge.api import create_app
from bridge.audit import Access, audit_event, event_from_record, record
from bridge.audit_spool import (
    PREALLOCATE_BYTES,
    SUFFIX,
    AuditSpool,
    SpoolFolder,
    frame,
    read_frames,
    spool_directory,
    spool_state,
)
from bridge.services import open_services

from .fhir_support import audit_spool, bearer, consent, in_threads, observation, patient, put

ROOT = Path(__file__).resolve().parents[2]


def _access(pid: str = "p1") -> Access:
    return Access("read", "org-a", "client-a", {f"Patient/{pid}"}, [f"Observation/o-{pid}/_history/1"],
                  "/fhir/Observation/o-" + pid)


def _stored_ids(services) -> list[str]:
    with services.db.transaction() as cur:
        cur.execute("SELECT res_id FROM resource_versions WHERE res_type = 'AuditEvent'")
        return [row[0] for row in cur.fetchall()]


def _spool_files(services) -> list[Path]:
    return sorted(spool_directory(services.config.data_dir).glob("*" + SUFFIX))


@pytest.fixture
def services(config):
    services = open_services(config)
    yield services
    services.close()


def test_read_frames_stops_before_an_incomplete_or_damaged_record():
    one, two = frame(b'{"a":1}'), frame(b'{"b":2}')
    assert read_frames(one + two) == ([b'{"a":1}', b'{"b":2}'], len(one + two), False)
    assert read_frames(one + two[:5]) == ([b'{"a":1}'], len(one), False)  # being written: not damage
    assert read_frames(one + two[:-1]) == ([b'{"a":1}'], len(one), False)
    flipped = two[:-2] + bytes([two[-2] ^ 1]) + two[-1:]
    assert read_frames(one + flipped + frame(b"{}")) == ([b'{"a":1}'], len(one), True)
    assert read_frames(b"") == ([], 0, False)


def test_read_frames_in_space_written_ahead_with_zeros():
    one, two = frame(b'{"a":1}'), frame(b'{"b":2}')
    zeros = bytes(64)
    assert read_frames(one + two + zeros) == ([b'{"a":1}', b'{"b":2}'], len(one + two), False)
    assert read_frames(zeros) == ([], 0, False)
    for cut in (3, 9, len(two) - 1):  # a write cut short inside the header or the payload
        assert read_frames(one + two[:cut] + zeros) == ([b'{"a":1}'], len(one), False), cut
    flipped = two[:-2] + bytes([two[-2] ^ 1]) + two[-1:]
    assert read_frames(one + flipped + zeros) == ([b'{"a":1}'], len(one), True), "all its bytes there: damage"
    assert read_frames(one + bytes(8) + two + zeros)[2], "records after zeroed bytes: damage"
    assert read_frames(one + two[:-3] + b"\0" + two[-2:] + zeros)[2], "a NUL inside JSON: damage"


def _records_then_zeros(path: Path) -> list[bytes]:
    """The records of a spool file, checked to be followed by zeros only."""
    raw = path.read_bytes()
    payloads, length, damaged = read_frames(raw)
    assert not damaged and raw[length:].strip(b"\0") == b"", "nothing but zeros after the records"
    return payloads


def test_events_are_durable_in_the_spool_before_they_are_stored_then_stored_once(services):
    data, spool = audit_spool(services)
    ids: list[str] = []

    def work() -> None:
        for i in range(20):
            ids.append(record(spool, _access(f"p{i % 3}"), "0", "HTTP 200", "test"))

    in_threads(6, work)
    [path] = _spool_files(services)
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700, \
        "who was read is as private as the records"
    payloads = _records_then_zeros(path)
    assert path.stat().st_size == PREALLOCATE_BYTES, "records are written into zeros written ahead"
    assert sorted(json.loads(p)["id"] for p in payloads) == sorted(ids) and len(set(ids)) == 120
    assert _stored_ids(services) == [], "nothing is stored until the spool is folded"

    folder = SpoolFolder(spool_directory(services.config.data_dir), services.db, data.store)
    assert folder.fold() == 120
    assert sorted(_stored_ids(services)) == sorted(ids)
    assert services.log.queued() == 120, "every event's leaf is queued with it"
    assert folder.fold() == 0
    assert SpoolFolder(folder.directory, services.db, data.store).fold() == 0, \
        "a second folder (another process, or a restart) stores nothing twice"
    assert path.exists(), "the file of a live process is kept"
    stored = data.store.read("AuditEvent", ids[0])
    assert stored.resource["recorded"] == stored.last_updated or stored.resource["recorded"].startswith(
        stored.last_updated[:19])
    assert stored.resource["entity"][0]["what"]["reference"].startswith("Patient/p")
    spool.close()
    assert folder.fold() == 0 and _spool_files(services) == [], "a finished file, once stored, is deleted"


def test_rotation_keeps_files_small_and_loses_nothing(services):
    data, _ = audit_spool(services)
    spool = AuditSpool(spool_directory(services.config.data_dir), rotate_bytes=1000)
    ids = [record(spool, _access(), "0", "HTTP 200", "test") for _ in range(12)]
    assert len(_spool_files(services)) >= 3
    folder = SpoolFolder(spool.directory, services.db, data.store)
    assert folder.fold() == 12 and sorted(_stored_ids(services)) == sorted(ids)
    assert _spool_files(services) == ([spool.path] if spool.path else []), "rotated files are deleted once stored"


def test_a_torn_last_record_of_a_dead_process_is_dropped_and_the_rest_stored(services, caplog):
    data, spool = audit_spool(services)
    ids = [record(spool, _access(), "0", "HTTP 200", "test") for _ in range(3)]
    path = spool.path
    spool.close()
    end = sum(len(frame(p)) for p in _records_then_zeros(path))
    with open(path, "r+b") as f:  # what a process killed inside write() leaves: the zeros partly overwritten
        f.seek(end)
        f.write(frame(b'{"resourceType":"AuditEvent"')[:-4])
    assert SpoolFolder(spool.directory, services.db, data.store).fold() == 3
    assert sorted(_stored_ids(services)) == sorted(ids) and not path.exists()
    assert "not a whole record" in caplog.text


def test_a_killed_api_process_loses_no_acknowledged_event(services):
    """A real process appends as fast as it can and prints each id once append() returned; it is
    killed mid-stream; every printed id is stored by a folder afterwards, none twice."""
    data, _ = audit_spool(services)
    directory = spool_directory(services.config.data_dir)
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from bridge.audit import Access, record
        from bridge.audit_spool import AuditSpool
        spool = AuditSpool(Path({str(directory)!r}))
        while True:
            print(record(spool, Access("read", "org-a", "c", {{"Patient/p1"}}), "0", "ok", "t"), flush=True)
        """)], stdout=subprocess.PIPE, text=True)
    acknowledged = [child.stdout.readline().strip() for _ in range(150)]
    child.send_signal(signal.SIGKILL)
    rest, _ = child.communicate(timeout=30)
    acknowledged += rest.split()
    folder = SpoolFolder(directory, services.db, data.store)
    folder.fold()
    stored = _stored_ids(services)
    assert len(stored) == len(set(stored)) and set(acknowledged) <= set(stored)
    assert _spool_files(services) == [], "the dead process's file is deleted once stored"


def test_a_failed_sync_fails_the_request_and_leaves_no_partial_record(services, config, monkeypatch):
    """A full disk cannot be produced here: os.fdatasync is replaced by one raising ENOSPC (a mock of
    that fault only).  The read is refused with 503 and nothing of it reaches the partner; the spool
    holds no partial record, so the next request's event is read back."""
    put(services, patient("p1", "Diaz", "Ana", "female", "1980-01-01"))
    put(services, observation("o1", "p1", "2339-0", "2026-01-01T10:00:00Z"))
    put(services, consent("c1", "p1", "org-a"))
    client = create_app(services=services).test_client()
    headers = bearer(services, "org-a", "system/*.rs")
    assert client.get("/fhir/Observation/o1", headers=headers).status_code == 200
    real = os.fdatasync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", full)
    refused = client.get("/fhir/Observation/o1", headers=headers)
    assert refused.status_code == 503 and b"Diaz" not in refused.data and b"2339-0" not in refused.data
    monkeypatch.setattr(os, "fdatasync", real)
    assert client.get("/fhir/Observation/o1", headers=headers).status_code == 200
    [path] = _spool_files(services)
    assert len(_records_then_zeros(path)) == 2


def test_an_audit_search_sees_what_every_api_process_spooled(services):
    """Events spooled by another process (another spool file, its owner alive) are stored before an
    AuditEvent search runs, so the patient's party sees every access up to its own request."""
    put(services, patient("p1", "Diaz", "Ana", "female", "1980-01-01"))
    put(services, consent("cons-audit", "p1", "org-patient-app", classes=("AuditEvent",)))
    _, other_worker = audit_spool(services)
    spooled = record(other_worker, _access("p1"), "0", "HTTP 200", "another worker")
    client = create_app(services=services).test_client()
    response = client.get("/fhir/AuditEvent?patient=p1", headers=bearer(services, "org-patient-app", "system/*.rs"))
    assert response.status_code == 200, response.get_json()
    found = {e["resource"]["id"] for e in response.get_json()["entry"]}
    assert spooled in found


def test_a_forked_child_spools_to_a_file_of_its_own(services):
    _, spool = audit_spool(services)
    record(spool, _access(), "0", "HTTP 200", "parent")
    pid = os.fork()
    if pid == 0:  # the child: must not append to (or unlock) the parent's file
        try:
            record(spool, _access(), "0", "HTTP 200", "child")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    record(spool, _access(), "0", "HTTP 200", "parent")
    files = _spool_files(services)
    assert len(files) == 2
    sources = [sorted(event_from_record(p)["source"]["observer"]["display"] for p in read_frames(f.read_bytes())[0])
               for f in files]
    assert sorted(sources) == [["child"], ["parent", "parent"]]


def test_audit_fold_interval_is_a_positive_setting(config):
    from bridge.config import load_config
    from bridge.errors import ConfigError

    assert load_config(env={}, data_dir=config.data_dir).audit_fold_interval == 0.5
    assert load_config(env={"FHIR_BRIDGE_AUDIT_FOLD_INTERVAL": "0.1"}, data_dir=config.data_dir).audit_fold_interval == 0.1
    with pytest.raises(ConfigError, match="audit_fold_interval"):
        load_config(env={"FHIR_BRIDGE_AUDIT_FOLD_INTERVAL": "0"}, data_dir=config.data_dir)


def test_an_audit_search_that_cannot_bring_the_trail_up_to_date_says_so(services):
    """A record that cannot be stored (here a CRC-valid record that is not JSON: only a bug could write
    one) makes the AuditEvent search answer 503 rather than a trail that silently misses events."""
    put(services, patient("p1", "Diaz", "Ana", "female", "1980-01-01"))
    put(services, consent("cons-audit", "p1", "org-patient-app", classes=("AuditEvent",)))
    _, other_worker = audit_spool(services)
    other_worker.append(b"not an AuditEvent")
    client = create_app(services=services).test_client()
    response = client.get("/fhir/AuditEvent?patient=p1", headers=bearer(services, "org-patient-app", "system/*.rs"))
    assert response.status_code == 503
    assert "AuditEvents could not be stored" in response.get_json()["issue"][0]["diagnostics"]


def test_a_damaged_record_of_a_dead_process_keeps_its_file_aside(services, caplog):
    """A record failing its CRC with more after it: what precedes it is stored, the file is kept as
    .damaged for an operator rather than deleted; a file left half made is removed."""
    data, spool = audit_spool(services)
    ids = [record(spool, _access(), "0", "HTTP 200", "test") for _ in range(2)]
    path = spool.path
    spool.close()
    raw = bytearray(path.read_bytes())
    first = len(frame(read_frames(bytes(raw))[0][0]))
    raw[first + 10] ^= 0xFF  # inside the second record
    path.write_bytes(bytes(raw))
    (path.parent / "1-2-dead.spool.new").write_bytes(b"")  # a process died between making and naming it
    folder = SpoolFolder(spool.directory, services.db, data.store)
    assert folder.fold() == 1 and _stored_ids(services) == ids[:1]
    assert not path.exists() and path.with_name(path.name + ".damaged").exists()
    assert "kept as" in caplog.text
    assert spool_state(spool.directory) == {"files": 0, "bytes": 0, "damaged": 1}, "what /health shows"
    assert list(path.parent.glob("*.new")) == []


def test_a_spooled_record_is_stored_as_the_audit_event_it_was_built_from(services):
    """The spool holds what the event is built from; the stored AuditEvent is the one audit_event()
    makes of it: patients, returned versions, the query (base64), outcome and words."""
    data, spool = audit_spool(services)
    access = Access("search-type", "org-a", "client-a", {"Patient/p2", "Patient/p1"},
                    ["Observation/o1/_history/3"], "/fhir/Observation?patient=p1,p2&code=ü")
    event_id = record(spool, access, "4", "HTTP 403: consent: déni", "origin/log")
    SpoolFolder(spool.directory, services.db, data.store).fold()
    stored = data.store.read("AuditEvent", event_id).resource
    expected = audit_event(access, "4", "HTTP 403: consent: déni", stored["recorded"], "origin/log", event_id)
    assert {k: v for k, v in stored.items() if k != "meta"} == expected
    assert [e["what"]["reference"] for e in stored["entity"][:3]] == [
        "Patient/p1", "Patient/p2", "Observation/o1/_history/3"]


def test_a_spool_file_of_whole_audit_events_is_still_stored(services):
    """A file written before the spool held records (whole AuditEvents, appended without zeros), left
    by a process that died across an upgrade, is stored as it is."""
    data, _ = audit_spool(services)
    directory = spool_directory(services.config.data_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    events = [audit_event(_access(f"p{i}"), "0", "HTTP 200", "2026-01-02T03:04:05.678Z", "old") for i in range(3)]
    (directory / f"1-2-old{SUFFIX}").write_bytes(b"".join(
        frame(json.dumps(e, separators=(",", ":")).encode()) for e in events))
    assert SpoolFolder(directory, services.db, data.store).fold() == 3
    for event in events:
        stored = data.store.read("AuditEvent", event["id"]).resource
        assert {k: v for k, v in stored.items() if k != "meta"} == event
    assert _spool_files(services) == []


def test_records_are_synced_without_growing_the_file(services, monkeypatch):
    """After the first record, the file's size changes only every PREALLOCATE_BYTES: each sync
    then writes data alone, not the file's metadata (which would commit the file-system journal)."""
    _, spool = audit_spool(services)
    sizes: list[int] = []
    real = os.fdatasync

    def watched(fd: int) -> None:
        sizes.append(os.fstat(fd).st_size)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", watched)
    for _ in range(50):
        record(spool, _access(), "0", "HTTP 200", "test")
    assert set(sizes) == {PREALLOCATE_BYTES} and len(sizes) == 50


def test_a_bad_record_in_a_live_file_is_reported_only_when_seen_twice(services, caplog):
    """A folder reading behind the writer can once see a record's later bytes and not its first
    (here: its header still zeros); that is not reported; the same bad record at the next fold is."""
    data, spool = audit_spool(services)
    ids = [record(spool, _access(), "0", "HTTP 200", "test") for _ in range(2)]
    first = len(frame(_records_then_zeros(spool.path)[0]))
    with open(spool.path, "r+b") as f:
        f.seek(first)
        f.write(bytes(8))
    folder = SpoolFolder(spool.directory, services.db, data.store)
    assert folder.fold() == 1 and _stored_ids(services) == ids[:1]
    assert "damaged record" not in caplog.text
    assert folder.fold() == 0
    assert "damaged record at byte" in caplog.text
