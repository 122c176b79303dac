"""One round of anchoring, as the scheduler runs it every period and `anchor now` runs it once.

1. Follow every anchor still under way (receipts, confirmations, re-sending what a node restart or
   a reorg lost), and re-check recently confirmed ones against reorgs.
2. If the log grew past the last anchored checkpoint, sign (or reuse) the checkpoint of the
   current tree and anchor it: one anchor per round however many entries were logged, and after
   downtime the first round anchors the current tree, which commits to everything before it.

A checkpoint's anchor is a row keyed by (target, size), so it is never anchored twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..checkpoint import Checkpoint
from ..errors import AnchorError
from ..log import MerkleLog
from ..note import Signer
from .base import AnchorBackend
from .store import OPEN_STATUSES, AnchorRecord, AnchorStore

log = logging.getLogger("anchoring.anchors")

#: confirmed anchors in this many most recent rows are re-checked each round for deep reorgs
RECHECK_CONFIRMED = 8


@dataclass
class RoundReport:
    new: AnchorRecord | None = None
    tracked: list[AnchorRecord] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Anchorer:
    def __init__(self, log: MerkleLog, store: AnchorStore, backend: AnchorBackend, signer: Signer,
                 progress: Callable[[str], None] | None = None) -> None:
        self.log = log
        self.store = store
        self.backend = backend
        self.signer = signer
        self.progress = progress or (lambda message: None)
        self._current: AnchorRecord | None = None  # the anchor being worked on, for error notes

    def _checkpoint(self, record: AnchorRecord) -> Checkpoint:
        stored = self.log.stored_checkpoint(record.size)
        if stored is None:
            raise AnchorError(f"anchor of size {record.size}: its checkpoint is not in log_checkpoints")
        return stored.checkpoint

    def _min_nonce(self) -> int:
        nonces = [r.nonce for r in self.store.list(self.backend.target, OPEN_STATUSES) if r.nonce is not None]
        return max(nonces) + 1 if nonces else 0

    def track(self) -> list[AnchorRecord]:
        open_rows = self.store.list(self.backend.target, OPEN_STATUSES)
        recent = [r for r in self.store.list(self.backend.target, ("confirmed",), limit=RECHECK_CONFIRMED)
                  if self.backend.name != "local"]
        out = []
        for record in sorted(open_rows + recent, key=lambda r: r.size):
            others = [r.nonce for r in self.store.list(self.backend.target, OPEN_STATUSES)
                      if r.nonce is not None and r.size != record.size]
            self._current = record
            out.append(self.backend.track(record, self._checkpoint(record), self.store.save,
                                          max(others) + 1 if others else 0))
        self._current = None
        return out

    def anchor_latest(self) -> AnchorRecord | None:
        """Anchor the current tree if the log grew since the last anchor here; None if it did not."""
        size = self.log.size()
        latest = self.store.latest(self.backend.target)
        if size == 0 or (latest is not None and latest.size >= size):
            return None
        stored = self.log.checkpoint(self.signer)
        cp = stored.checkpoint
        record = AnchorRecord(self.backend.target, cp.size, cp.root)
        if not self.store.create(record):
            return None  # another process anchors this checkpoint
        self._current = record
        self.progress(f"anchoring checkpoint {cp.origin} size {cp.size} with the {self.backend.name} backend")
        sent = self.backend.submit(self.store.get(record.target, record.size) or record, cp, self.store.save,
                                   self._min_nonce())
        if sent.status in ("sent", "included"):  # a fast chain may have mined it already
            sent = self.backend.track(sent, cp, self.store.save, self._min_nonce())
        return sent

    def run_once(self) -> RoundReport:
        """One round; errors are collected (and logged), so a node outage never stops the job."""
        report = RoundReport()
        try:
            self.backend.prepare()
            report.tracked = self.track()
            report.new = self.anchor_latest()
        except AnchorError as exc:
            log.warning("anchoring round incomplete: %s", exc)
            report.errors.append(str(exc))
            self._note_error(str(exc))
        finally:
            self._current = None
        return report

    def _note_error(self, message: str) -> None:
        """Keep the error on the anchor it stopped (or, if the backend itself failed, on every
        anchor under way), so `anchor status` and the API show it."""
        if self._current is not None:
            stopped = [r for r in [self.store.get(self._current.target, self._current.size)] if r is not None]
        else:
            stopped = self.store.list(self.backend.target, OPEN_STATUSES)
        for record in stopped:
            self.store.save(replace(record, last_error=message[:500]))
