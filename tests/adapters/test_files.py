"""The file drop: single messages and batch files ingested, then moved to processed/ or failed/."""

from __future__ import annotations

from pathlib import Path

from adapters.files.watcher import FileInbox
from bridge.hl7.parser import split_batch
from tests.ingest_support import variants


def batch(messages: list[bytes]) -> bytes:
    head = b"FHS|^~\\&|LAB|HOSP|BRIDGE|HUB|20240101\rBHS|^~\\&|LAB|HOSP|BRIDGE|HUB|20240101\r"
    tail = f"BTS|{len(messages)}\rFTS|1\r".encode()
    return head + b"".join(messages) + tail


def test_single_batch_broken_and_garbage_files(pipeline, corpus: Path, tmp_path: Path) -> None:
    template = (corpus / "hl7v2/microsoft-FHIR-Converter/ADT-A01-02.hl7").read_bytes()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "one.hl7").write_bytes(variants(template, 1, "F1")[0])
    (inbox / "batch.hl7").write_bytes(batch(variants(template, 5, "FB")))
    (inbox / "broken-batch.hl7").write_bytes(b"PID|1||orphan\r" + batch(variants(template, 2, "FX")))
    (inbox / "garbage.txt").write_bytes(b"\x00\x01 not a message")
    (inbox / ".partial").write_bytes(b"still being copied")

    watcher = FileInbox(inbox, pipeline.ingest_many, split_batch, group=4, settle=0)
    results = {r.path.name: r for r in watcher.poll_once()}

    assert set(results) == {"one.hl7", "batch.hl7", "broken-batch.hl7", "garbage.txt"}
    assert [o.status for o in results["batch.hl7"].outcomes] == ["stored"] * 5
    assert (inbox / "processed/one.hl7").is_file() and (inbox / "processed/batch.hl7").is_file()
    for name in ("broken-batch.hl7", "garbage.txt"):
        assert (inbox / "failed" / name).is_file()
        report = (inbox / "failed" / f"{name}.error.txt").read_text()
        assert "reprocess" in report and "not stored" in report
    assert "segment outside a message" in (inbox / "failed/broken-batch.hl7.error.txt").read_text()
    assert sorted(p.name for p in inbox.iterdir()) == [".partial", "failed", "processed"]
    # kept, every one: 1 + 5 stored, the broken batch whole as one message, the garbage as one
    assert pipeline.inbox.counts() == {"stored": 6, "error": 2}

    # the same file dropped again: moved aside under a new name, nothing new in the inbox
    (inbox / "one.hl7").write_bytes(variants(template, 1, "F1")[0])
    [again] = watcher.poll_once()
    assert again.moved_to == inbox / "processed/one.hl7.1" and again.outcomes[0].duplicate
    assert pipeline.inbox.counts() == {"stored": 6, "error": 2}


def test_a_file_is_left_in_place_while_its_messages_cannot_be_kept(pipeline, corpus: Path, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "one.hl7").write_bytes((corpus / "hl7v2/microsoft-FHIR-Converter/ADT-A01-02.hl7").read_bytes())
    from bridge.db import open_database

    # a database that cannot be opened (its folder cannot be created): a real fault, not a mock
    pipeline.db = open_database("sqlite:////proc/no-such-dir/bridge.db")
    watcher = FileInbox(inbox, pipeline.ingest_many, split_batch, settle=0)
    [result] = watcher.poll_once()
    assert result.moved_to is None and result.outcomes[0].status == "not-kept"
    assert result.outcomes[0].ack_code == "AR"
    assert (inbox / "one.hl7").is_file()
