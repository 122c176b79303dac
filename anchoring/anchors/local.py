"""The ``local`` anchor backend: an append-only, hash-chained, signed journal file.

This is the embedded default so that a bridge runs without any chain.  It gives NO external
trust: the operator holds the file and the key, and could rewrite the whole journal and re-sign
it.  What it does give is tamper evidence against everyone else and against accidents: each record
is a C2SP signed note (:mod:`anchoring.note`, the log's Ed25519 key) that commits to the SHA-256
of the previous record line, so editing, removing or reordering any record breaks the chain from
there on.  For "the operator cannot later show a different history", use the ``evm`` backend.

One record per line, JSON: ``{"note": "<signed note>"}``, where the note text is::

    fhir-bridge anchor journal v1
    seq <n>
    prev <base64 SHA-256 of the previous line's bytes, without its newline; 32 zero bytes first>
    time <UTC, ISO 8601>
    <the checkpoint body: origin, size, base64 root, extensions>
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from ..checkpoint import Checkpoint, parse_checkpoint_body
from ..errors import AnchorError, AnchorVerificationError, VerificationError
from ..note import Signer, Verifier, open_note, sign_note
from .base import AnchorEvidence, Save
from .store import AnchorRecord

HEADER = "fhir-bridge anchor journal v1"
GENESIS = bytes(32)


@dataclass(frozen=True)
class JournalRecord:
    seq: int
    prev: bytes
    time: str
    checkpoint: Checkpoint
    line: bytes  # the record's line, without newline; its SHA-256 is the next record's prev

    @property
    def hash(self) -> bytes:
        return line_hash(self.line)


def line_hash(line: bytes) -> bytes:
    return hashlib.sha256(line).digest()


def record_text(seq: int, prev: bytes, time: str, checkpoint: Checkpoint) -> str:
    return f"{HEADER}\nseq {seq}\nprev {base64.b64encode(prev).decode()}\ntime {time}\n" + checkpoint.body()


def make_line(seq: int, prev: bytes, time: str, checkpoint: Checkpoint, signer: Signer) -> bytes:
    """The journal line for a record (without newline): pure but for the signature."""
    note = sign_note(record_text(seq, prev, time, checkpoint), signer)
    return json.dumps({"note": note}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def parse_line(line: bytes, verifiers: list[Verifier], number: int) -> JournalRecord:
    where = f"journal line {number}"
    try:
        note = json.loads(line.decode("utf-8"))["note"]
        opened = open_note(note, verifiers)
    except (ValueError, KeyError, TypeError) as exc:
        raise AnchorVerificationError(f"{where}: expected a JSON object with a signed note, found {line[:60]!r}") from exc
    except VerificationError as exc:
        raise AnchorVerificationError(f"{where}: {exc}") from exc
    parts = opened.text.split("\n", 4)
    if len(parts) < 5 or parts[0] != HEADER or not parts[1].startswith("seq ") or not parts[2].startswith("prev ") \
            or not parts[3].startswith("time "):
        raise AnchorVerificationError(f"{where}: expected '{HEADER}', seq, prev and time lines, found {parts[:4]!r}")
    try:
        seq = int(parts[1][4:])
        prev = base64.b64decode(parts[2][5:], validate=True)
        checkpoint = parse_checkpoint_body(parts[4])
    except (ValueError, VerificationError) as exc:
        raise AnchorVerificationError(f"{where}: {exc}") from exc
    return JournalRecord(seq, prev, parts[3][5:], checkpoint, line)


def verify_journal(lines: list[bytes], verifiers: list[Verifier]) -> list[JournalRecord]:
    """Check every signature and the hash chain; the first broken record is named."""
    records: list[JournalRecord] = []
    prev = GENESIS
    for number, line in enumerate(lines, start=1):
        record = parse_line(line, verifiers, number)
        if record.seq != number - 1:
            raise AnchorVerificationError(f"journal line {number}: expected seq {number - 1}, found {record.seq}")
        if record.prev != prev:
            raise AnchorVerificationError(
                f"journal line {number}: expected prev {base64.b64encode(prev).decode()} (hash of line {number - 1}), "
                f"found {base64.b64encode(record.prev).decode()}: the journal was altered before this line"
            )
        records.append(record)
        prev = record.hash
    return records


class LocalJournal:
    """The journal file; appends are serialised by an exclusive lock on the file (fcntl)."""

    def __init__(self, path: str | Path, signer: Signer | None, verifiers: list[Verifier]) -> None:
        self.path = Path(path)
        self.signer = signer
        self.verifiers = verifiers

    def lines(self) -> list[bytes]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        if data and not data.endswith(b"\n"):
            # a crash in the middle of an append: the partial last line was never acknowledged
            data = data[: data.rfind(b"\n") + 1]
        return [line for line in data.split(b"\n") if line]

    def records(self) -> list[JournalRecord]:
        return verify_journal(self.lines(), self.verifiers)

    def append(self, checkpoint: Checkpoint) -> JournalRecord:
        import fcntl

        if self.signer is None:
            raise AnchorError("the local journal needs the log's signing key to append; run `fhir-bridge keygen`")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            tail = _tail_line(fd)  # only the end is read: appends stay O(1) as the journal grows
            if tail is not None:
                last = parse_line(tail, self.verifiers, 0)  # the tail must still verify
                seq, prev = last.seq + 1, last.hash
            else:
                seq, prev = 0, GENESIS
            time = datetime.now(UTC).isoformat(timespec="seconds")
            line = make_line(seq, prev, time, checkpoint, self.signer)
            os.write(fd, line + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        return JournalRecord(seq, prev, time, checkpoint, line)


def _tail_line(fd: int, chunk: int = 8192) -> bytes | None:
    """The last complete line of the open file (without newline); a partial line after it, left
    by a crash mid-append, is cut off first."""
    end = os.fstat(fd).st_size
    buffer = b""
    position = end
    while position > 0:
        step = min(chunk, position)
        position -= step
        buffer = os.pread(fd, step, position) + buffer
        complete_end = buffer.rfind(b"\n")
        if complete_end < 0:
            continue
        if position + complete_end + 1 != end:
            os.ftruncate(fd, position + complete_end + 1)
            end = position + complete_end + 1
        start = buffer.rfind(b"\n", 0, complete_end)
        if start >= 0 or position == 0:
            return buffer[start + 1 : complete_end] or None
    if end:
        os.ftruncate(fd, 0)  # only a partial first line: never acknowledged
    return None


class LocalBackend:
    name = "local"

    def __init__(self, journal: LocalJournal) -> None:
        self.journal = journal
        self.target = f"local:{journal.path.name}"

    def prepare(self) -> None:
        if self.journal.path.exists() and not os.access(self.journal.path, os.W_OK):
            raise AnchorError(f"the anchor journal {self.journal.path} is not writable; check its owner and mode")

    def submit(self, record: AnchorRecord, checkpoint: Checkpoint, save: Save, min_nonce: int = 0) -> AnchorRecord:
        appended = self.journal.append(checkpoint)
        return save(replace(record, status="confirmed", tx_hash=appended.hash.hex(), block_number=appended.seq,
                            head=appended.seq, attempts=record.attempts + 1, last_error=None))

    def track(self, record: AnchorRecord, checkpoint: Checkpoint, save: Save, min_nonce: int = 0) -> AnchorRecord:
        if record.status != "confirmed":  # a crash between the row and the append: append now
            found = [r for r in self.journal.records() if r.checkpoint == checkpoint]
            if found:
                return save(replace(record, status="confirmed", tx_hash=found[0].hash.hex(),
                                    block_number=found[0].seq, head=found[0].seq))
            return self.submit(record, checkpoint, save)
        return record

    def verify(self, checkpoint: Checkpoint) -> AnchorEvidence:
        records = self.journal.records()
        same_size = [r for r in records if r.checkpoint.origin == checkpoint.origin
                     and r.checkpoint.size == checkpoint.size]
        if not same_size:
            raise AnchorVerificationError(
                f"journal: expected a record of origin {checkpoint.origin!r} size {checkpoint.size} in "
                f"{self.journal.path}, found none among {len(records)} records"
            )
        record = same_size[0]
        if record.checkpoint.root != checkpoint.root:
            raise AnchorVerificationError(
                f"root: expected {base64.b64encode(checkpoint.root).decode()} (the checkpoint's), found "
                f"{base64.b64encode(record.checkpoint.root).decode()} in journal record {record.seq}"
            )
        return AnchorEvidence(
            "local", checkpoint.origin, checkpoint.size, checkpoint.root,
            f"journal {self.journal.path} record {record.seq}", len(records) - record.seq,
            {"journal": str(self.journal.path), "seq": record.seq, "record_hash": record.hash.hex(),
             "time": record.time, "external_trust": False},
        )

    def close(self) -> None:
        pass
