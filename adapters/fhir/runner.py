"""One sync of one source (REST or bulk), its report, the progress bar, and the scheduled jobs."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from anchoring.db import Database
from bridge.fhir_ingest import FhirIngest, IngestCounts, now_instant

from .bulk import BulkExport
from .errors import FhirSourceError
from .http import SourceClient
from .intake import source_label
from .rest import sync_type
from .sources import FhirSource, load_sources
from .state import SyncState

log = logging.getLogger("fhir_bridge.fhir_sync")

Progress = Callable[[str, int, int | None], None]
#: seconds a sync may hold its source's lock; a longer sync would let a second one start (bulk exports of
#: very large servers: raise it)
LOCK_TTL = 6 * 3600.0


@dataclass
class SyncReport:
    source: str
    mode: str
    started_at: str
    finished_at: str = ""
    counts: IngestCounts = field(default_factory=IngestCounts)
    types: dict[str, dict] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)  # retried and overcome, or the reason for stopping
    errors: list[str] = field(default_factory=list)  # what did not complete; the next sync resumes it
    open_rejects: int = 0
    seconds: float = 0.0

    @property
    def status(self) -> str:
        if not self.errors:
            return "ok"
        return "partial" if self.counts.received or len(self.errors) < max(1, len(self.types)) else "failed"

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "mode": self.mode, "status": self.status, "started_at": self.started_at,
                "finished_at": self.finished_at, "seconds": round(self.seconds, 3), **self.counts.as_dict(),
                "types": self.types, "faults": self.faults, "errors": self.errors, "open_rejects": self.open_rejects}

    def summary(self) -> str:
        c = self.counts
        text = (f"sync {self.source} ({self.mode}): {self.status}; {c.received} received, {c.created} new versions, "
                f"{c.unchanged} unchanged, {c.invalid} invalid (kept; `fhir-bridge sync {self.source} --rejects`) "
                f"in {self.seconds:.1f} s")
        if self.faults:
            text += f"; {len(self.faults)} fault(s) retried"
        if self.errors:
            text += "; incomplete: " + " | ".join(self.errors) + " (the next sync resumes)"
        return text


def sync_source(db: Database, source: FhirSource, *, mode: str | None = None, full: bool = False,
                progress: Progress | None = None, sleep: Callable[[float], None] = time.sleep,
                client: SourceClient | None = None) -> SyncReport:
    """Pull what changed at ``source`` since the last sync (everything with ``full``)."""
    mode = mode or source.mode
    report = SyncReport(source.name, mode, now_instant())
    began = time.monotonic()
    ingest = FhirIngest(db)
    ingest.ensure_schema()
    state = SyncState(db)
    state.ensure_schema()
    owner = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
    holder = state.claim(source.name, owner, time.time(), LOCK_TTL)
    if holder is not None and _dead_here(holder):  # its process crashed on this machine: take over
        log.warning("sync of %s: taking over the lock of %s, a process that no longer runs", source.name, holder)
        state.release(source.name, holder)
        holder = state.claim(source.name, owner, time.time(), LOCK_TTL)
    if holder is not None:
        report.errors.append(f"another sync of {source.name} is running ({holder}); try again when it ends")
        return _finish(report, began, ingest, state, source, record=False)
    try:
        if full:
            state.reset(source.name)
        if client is None:
            client = SourceClient(source, on_fault=report.faults.append, sleep=sleep)
    except FhirSourceError as exc:
        state.release(source.name, owner)
        report.errors.append(str(exc))
        return _finish(report, began, ingest, state, source)
    try:
        if mode == "bulk":
            export = BulkExport(client, ingest, state, source, progress, sleep)
            try:
                export.run()
            except FhirSourceError as exc:
                report.errors.append(f"$export: {exc}")
            report.counts.add(export.counts)
            report.types["$export"] = {**export.counts.as_dict(), "files": export.files_done, "resumed": export.resumed}
        else:
            for res_type in source.resource_types:
                counts = IngestCounts()
                try:
                    result = sync_type(client, ingest, state, source, res_type, progress, counts)
                except FhirSourceError as exc:
                    report.errors.append(f"{res_type}: {exc}")
                    report.types[res_type] = {**counts.as_dict(), "error": str(exc)}
                    report.counts.add(counts)
                    continue
                report.counts.add(result.counts)
                report.types[res_type] = {**result.counts.as_dict(), "pages": result.pages,
                                          "watermark": result.watermark}
    finally:
        client.close()
        state.release(source.name, owner)
    return _finish(report, began, ingest, state, source)


def _dead_here(owner: str) -> bool:
    """True if ``owner`` (host:pid:thread) names a process of this machine that has ended."""
    host, _, rest = owner.partition(":")
    pid = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _finish(report: SyncReport, began: float, ingest: FhirIngest, state: SyncState, source: FhirSource,
            record: bool = True) -> SyncReport:
    report.finished_at = now_instant()
    report.seconds = time.monotonic() - began
    report.open_rejects = ingest.count_rejects(source_label(source))
    if record:
        state.record_run(source.name, report.started_at, report.finished_at, report.mode, report.status,
                         {k: v for k, v in report.as_dict().items() if k not in ("source", "mode", "status")})
    return report


class ProgressBar:
    """A small progress bar on stderr: one line per resource type, redrawn in place on a terminal."""

    def __init__(self, source: str, stream: IO[str] | None = None, width: int = 30) -> None:
        self.source, self.stream, self.width = source, stream or sys.stderr, width
        self.tty = self.stream.isatty()
        self.label: str | None = None
        self.started = time.monotonic()
        self.last_draw = 0.0
        self.line = ""

    def __call__(self, label: str, done: int, total: int | None) -> None:
        if label != self.label:
            self.finish()
            self.label, self.started = label, time.monotonic()
        rate = done / max(time.monotonic() - self.started, 1e-6)
        if total:
            filled = int(self.width * min(done, total) / total)
            bar = "#" * filled + "-" * (self.width - filled)
            self.line = f"{self.source} {label}: [{bar}] {done}/{total} {rate:.0f}/s"
        else:
            self.line = f"{self.source} {label}: {done} {rate:.0f}/s"
        now = time.monotonic()
        if self.tty and now - self.last_draw > 0.1:
            self.stream.write("\r" + self.line + "\x1b[K")
            self.stream.flush()
            self.last_draw = now

    def finish(self) -> None:
        if self.label is not None and self.line:
            self.stream.write(("\r" + self.line + "\x1b[K\n") if self.tty else self.line + "\n")
            self.stream.flush()
        self.label, self.line = None, ""


# -- scheduling inside `fhir-bridge serve` --------------------------------------------------------

def scheduled_sync(db: Database, source: FhirSource) -> None:
    """One scheduled run; never raises (the scheduler would only log a traceback)."""
    try:
        report = sync_source(db, source)
    except Exception:
        log.exception("sync of %s failed; it runs again at the next interval", source.name)
        return
    (log.warning if report.errors or report.counts.invalid else log.info)("%s", report.summary())


def schedule_sources(scheduler: Any, db: Database, config_file: str | None) -> list[str]:
    """Add one apscheduler interval job per source with ``interval`` > 0; returns the job ids."""
    from datetime import UTC, datetime

    ids = []
    for source in load_sources(config_file):
        if source.interval <= 0:
            continue
        job_id = f"fhir-sync:{source.name}"
        scheduler.add_job(scheduled_sync, "interval", seconds=source.interval, args=[db, source], id=job_id,
                          next_run_time=datetime.now(UTC))
        ids.append(job_id)
    return ids
