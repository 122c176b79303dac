"""The file drop: HL7v2 files put into an inbox folder are ingested, then moved aside.

A file is read once it has not changed for ``settle`` seconds (a writer may still be copying it).
Batch files (FHS/BHS ... BTS/FTS, or several MSH) are split into messages; a file whose envelope is
broken is kept whole as one message with status ``error``.  Only after every message of a file is
committed does the file move: to ``processed/`` when all were stored, to ``failed/`` with a
``NAME.error.txt`` beside it saying which messages failed and why.  A file whose messages could not
be committed (database down) stays where it is and is tried again at the next poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bridge.hl7.types import HL7Error
from bridge.inbox import STORED
from bridge.pipeline import Incoming, Outcome

log = logging.getLogger("fhir_bridge.files")

PROCESSED, FAILED = "processed", "failed"
Splitter = Callable[[bytes], list[bytes]]
IngestMany = Callable[[Sequence[Incoming]], list[Outcome]]


@dataclass
class FileResult:
    path: Path
    moved_to: Path | None
    outcomes: list[Outcome]


def messages_of(raw: bytes, split: Splitter) -> tuple[list[bytes], HL7Error | None]:
    """The messages of a file, or the whole file and the reason it cannot be split."""
    try:
        messages = split(raw)
    except HL7Error as exc:
        return [raw], exc
    return (messages or [raw]), None


def error_report(path: Path, outcomes: list[Outcome]) -> str:
    lines = [f"{path.name}: {sum(o.status != STORED for o in outcomes)} of {len(outcomes)} message(s) not stored"]
    for o in outcomes:
        if o.status == STORED:
            continue
        where = f" at {o.error.location}" if o.error and o.error.location else ""
        reason = f"{o.error.code}{where}: {o.error.text}" if o.error else o.status
        lines.append(f"message {o.message_id} (MSH-10 {o.header.control_id or '-'}): {o.ack_code} {reason}")
    lines.append("Each message is kept in the inbox: fix the mapping, then `fhir-bridge messages reprocess ID` "
                 "(or --all-failed); `fhir-bridge messages show ID` has the details.")
    return "\n".join(lines) + "\n"


def _free_name(folder: Path, name: str) -> Path:
    target = folder / name
    n = 1
    while target.exists() or target.with_name(target.name + ".error.txt").exists():
        target = folder / f"{name}.{n}"
        n += 1
    return target


class FileInbox:
    def __init__(
        self, folder: Path, ingest_many: IngestMany, split: Splitter, group: int = 64, settle: float = 1.0
    ) -> None:
        self.folder, self.ingest_many, self.split = Path(folder), ingest_many, split
        self.group, self.settle = group, settle
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def ready_files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        now = time.time()
        out = []
        for path in sorted(self.folder.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            try:
                if now - path.stat().st_mtime < self.settle:
                    continue
            except FileNotFoundError:
                continue
            out.append(path)
        return out

    def ingest_file(self, path: Path) -> FileResult:
        raw = path.read_bytes()
        messages, envelope_error = messages_of(raw, self.split)
        source = f"file:{path.name}"
        items = [Incoming(m, source, envelope_error) for m in messages]
        outcomes: list[Outcome] = []
        for at in range(0, len(items), self.group):
            outcomes += self.ingest_many(items[at : at + self.group])
        if not all(o.committed for o in outcomes):
            log.error("%s: not every message could be kept; the file stays for the next poll", path)
            return FileResult(path, None, outcomes)
        if all(o.status == STORED for o in outcomes):
            target = _free_name(self.folder / PROCESSED, path.name)
        else:
            target = _free_name(self.folder / FAILED, path.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.parent.name == FAILED:
            target.with_name(target.name + ".error.txt").write_text(error_report(path, outcomes), encoding="utf-8")
        path.replace(target)
        log.info("%s: %d message(s) -> %s", path.name, len(outcomes), target)
        return FileResult(path, target, outcomes)

    def poll_once(self) -> list[FileResult]:
        results = []
        for path in self.ready_files():
            try:
                results.append(self.ingest_file(path))
            except OSError as exc:
                log.error("%s: cannot read or move it: %s", path, exc)
        return results

    def start(self, interval: float) -> FileInbox:
        self.folder.mkdir(parents=True, exist_ok=True)

        def run() -> None:
            while not self._stop.wait(interval):
                try:
                    self.poll_once()
                except Exception:
                    log.exception("polling %s failed", self.folder)

        self._thread = threading.Thread(target=run, name="file-inbox", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
