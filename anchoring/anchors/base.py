"""The interface every anchor backend implements, and what verification returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..checkpoint import Checkpoint
from .store import AnchorRecord

#: persists a record and returns it as stored; backends call it before every irreversible step
Save = Callable[[AnchorRecord], AnchorRecord]


@dataclass(frozen=True)
class AnchorEvidence:
    """Where a checkpoint's anchor was found and what was checked."""

    backend: str  # "local" or "evm"
    origin: str
    size: int
    root: bytes
    location: str  # human-readable: journal path and record, or chain, contract, transaction, block
    confirmations: int
    details: dict


class AnchorBackend(Protocol):
    #: "local" or "evm"
    name: str
    #: where this backend's anchors go; part of the anchors table's key
    target: str

    def prepare(self) -> None:
        """Check the backend can be used (chain id, contract code, journal readable); raises AnchorError."""
        ...

    def submit(self, record: AnchorRecord, checkpoint: Checkpoint, save: Save, min_nonce: int = 0) -> AnchorRecord:
        """Anchor a checkpoint whose record is ``pending``; returns the record as it now is."""
        ...

    def track(self, record: AnchorRecord, checkpoint: Checkpoint, save: Save, min_nonce: int = 0) -> AnchorRecord:
        """Follow an anchor already under way: receipt, confirmations, re-send after a restart or reorg."""
        ...

    def verify(self, checkpoint: Checkpoint) -> AnchorEvidence:
        """Find the anchor of ``checkpoint`` where this backend puts them and check it; raises
        AnchorVerificationError naming the check that failed."""
        ...

    def close(self) -> None: ...
