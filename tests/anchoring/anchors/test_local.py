"""The local journal backend: append-only, hash-chained, signed; tampering is detected and named.
Runs on SQLite and on a real PostgreSQL (the anchors table beside the log's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anchoring.anchors.local import LocalBackend, LocalJournal, verify_journal
from anchoring.checkpoint import Checkpoint
from anchoring.errors import AnchorVerificationError
from anchoring.note import Signer, sign_note

from .conftest import anchorer, append


def local_backend(tmp_path: Path, signer: Signer) -> LocalBackend:
    return LocalBackend(LocalJournal(tmp_path / "journal.jsonl", signer, [signer.verifier]))


def test_anchor_each_growth_once(tmp_path, merkle_log, store, signer):
    backend = local_backend(tmp_path, signer)
    runner = anchorer(merkle_log, store, backend, signer)
    assert runner.run_once().new is None  # an empty log has nothing to anchor
    for batch in (3, 1, 4):
        append(merkle_log, batch, tag=f"b{batch}-")
        record = runner.run_once().new
        assert record.status == "confirmed"
        assert runner.run_once().new is None  # no checkpoint anchored twice
    records = backend.journal.records()
    assert [(r.seq, r.checkpoint.size) for r in records] == [(0, 3), (1, 4), (2, 8)]
    assert [r.size for r in store.list(backend.target)] == [8, 4, 3]
    for stored in merkle_log.checkpoints():
        evidence = backend.verify(stored.checkpoint)
        assert evidence.details["external_trust"] is False
    with pytest.raises(AnchorVerificationError, match="^root: expected"):
        backend.verify(Checkpoint(merkle_log.origin, 8, bytes(32)))
    with pytest.raises(AnchorVerificationError, match="^journal: expected a record of origin .* size 5"):
        backend.verify(Checkpoint(merkle_log.origin, 5, bytes(32)))


def _journal_with(tmp_path: Path, signer: Signer, n: int) -> LocalJournal:
    journal = LocalJournal(tmp_path / "journal.jsonl", signer, [signer.verifier])
    for size in range(1, n + 1):
        journal.append(Checkpoint("test.example/log", size, bytes([size]) * 32))
    return journal


def _rewrite(journal: LocalJournal, lines: list[bytes]) -> None:
    journal.path.write_bytes(b"".join(line + b"\n" for line in lines))


def test_tampering_is_detected(tmp_path, signer):
    journal = _journal_with(tmp_path, signer, 4)
    lines = journal.lines()
    assert len(verify_journal(lines, [signer.verifier])) == 4

    # Editing a record's root: its signature no longer verifies.
    note = json.loads(lines[1])["note"]
    edited = note.replace(Checkpoint("x", 2, bytes([2]) * 32).body().split("\n")[2], "A" * 43 + "=")
    _rewrite(journal, [lines[0], json.dumps({"note": edited}).encode(), *lines[2:]])
    with pytest.raises(AnchorVerificationError, match="^journal line 2: .*signature"):
        journal.records()

    # Removing a record: the next one's prev (and seq) no longer match.
    _rewrite(journal, [lines[0], *lines[2:]])
    with pytest.raises(AnchorVerificationError, match="^journal line 2: expected seq 1, found 2"):
        journal.records()

    # A record re-signed by the operator with a new history still breaks the chain after it.
    forged_text = json.loads(lines[1])["note"]
    body = forged_text[: forged_text.rfind("\n\n") + 1].replace(
        Checkpoint("x", 2, bytes([2]) * 32).body().split("\n")[2], "A" * 43 + "=")
    forged = json.dumps({"note": sign_note(body, signer)}).encode()
    _rewrite(journal, [lines[0], forged, *lines[2:]])
    with pytest.raises(AnchorVerificationError, match="^journal line 3: expected prev .* the journal was altered"):
        journal.records()

    # Another key's record is not accepted.
    _rewrite(journal, lines)
    other = Signer.generate("test.example/log")
    with pytest.raises(AnchorVerificationError, match="^journal line 1: signed note: expected a signature by a known"):
        verify_journal(lines, [other.verifier])


def test_partial_last_line_from_a_crash_is_dropped(tmp_path, signer):
    journal = _journal_with(tmp_path, signer, 2)
    with journal.path.open("ab") as f:
        f.write(b'{"note": "half a rec')
    assert len(journal.records()) == 2
    journal.append(Checkpoint("test.example/log", 3, bytes(32)))
    assert [r.seq for r in journal.records()] == [0, 1, 2]


def test_store_survives_reopen_and_keys_by_target(db, store, tmp_path, signer):
    from anchoring.anchors.store import AnchorRecord, AnchorStore

    assert store.create(AnchorRecord("evm:1:0xab", 5, b"\x01" * 32, nonce=3))
    assert not store.create(AnchorRecord("evm:1:0xab", 5, b"\x02" * 32))  # once per (target, size)
    assert store.create(AnchorRecord("local:journal.jsonl", 5, b"\x01" * 32))
    again = AnchorStore(db)
    again.ensure_schema()  # idempotent
    record = again.get("evm:1:0xab", 5)
    assert record.root == b"\x01" * 32 and record.nonce == 3 and record.status == "pending"
    from dataclasses import replace

    saved = again.save(replace(record, status="included", block_number=10, head=12, raw_tx=b"\x02\xf8"))
    assert again.get("evm:1:0xab", 5).raw_tx == b"\x02\xf8" and saved.confirmations == 3
    assert "raw_tx" not in saved.to_json()
    assert [r.target for r in again.for_size(5)] == ["evm:1:0xab", "local:journal.jsonl"]


@pytest.mark.parametrize("chunk", [7, 64, 8192])
def test_tail_line_reads_only_the_end(tmp_path, chunk):
    import os

    from anchoring.anchors.local import _tail_line

    path = tmp_path / "j"
    for content, tail, kept in [(b"", None, b""), (b"partial", None, b""), (b"one\n", b"one", b"one\n"),
                                (b"one\n" + b"x" * 100 + b"\n", b"x" * 100, b"one\n" + b"x" * 100 + b"\n"),
                                (b"a\nbb\ncrash-mid", b"bb", b"a\nbb\n")]:
        path.write_bytes(content)
        fd = os.open(path, os.O_RDWR)
        try:
            assert _tail_line(fd, chunk) == tail
        finally:
            os.close(fd)
        assert path.read_bytes() == kept
