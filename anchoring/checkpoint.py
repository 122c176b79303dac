"""C2SP tlog-checkpoint bodies and C2SP tlog-proof@v1 texts: formatting, parsing, verifying.

A checkpoint body is ``<origin>\\n<size>\\n<base64 root>\\n`` plus optional extension lines; it is
published as a signed note (:mod:`anchoring.note`).  A tlog-proof carries an entry's index, its
inclusion proof and the signed checkpoint it proves against.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field

from .errors import VerificationError
from .merkle import HASH_SIZE, leaf_hash, verify_inclusion
from .note import Verifier, b64decode_strict, open_note

PROOF_HEADER = "c2sp.org/tlog-proof@v1"


def _parse_decimal(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        raise VerificationError(f"{what}: expected a decimal number without leading zeros, found {text!r}")
    return int(text)


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = field(default=())

    def body(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "".join(line + "\n" for line in lines)


def parse_checkpoint_body(text: str) -> Checkpoint:
    if not text.endswith("\n"):
        raise VerificationError("checkpoint: expected the body to end with a newline, found none")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise VerificationError(f"checkpoint: expected origin, size and root lines, found {len(lines)} lines")
    origin, size_text, root_text, *extensions = lines
    if not origin:
        raise VerificationError("checkpoint: expected a non-empty origin line, found an empty one")
    size = _parse_decimal(size_text, "checkpoint size")
    root = b64decode_strict(root_text, "checkpoint root")
    if len(root) != HASH_SIZE:
        raise VerificationError(f"checkpoint root: expected {HASH_SIZE} bytes, found {len(root)}")
    if any(not ext for ext in extensions):
        raise VerificationError("checkpoint: expected non-empty extension lines, found an empty one")
    return Checkpoint(origin, size, root, tuple(extensions))


def open_checkpoint(note: str | bytes, verifiers: list[Verifier], origin: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint note and return its body.

    ``origin`` defaults to the name of the (single) verifier key, the convention for a log that
    signs under its own origin.
    """
    opened = open_note(note, verifiers)
    checkpoint = parse_checkpoint_body(opened.text)
    if origin is None and len(verifiers) == 1:
        origin = verifiers[0].name
    if origin is not None and checkpoint.origin != origin:
        raise VerificationError(f"checkpoint origin: expected {origin!r}, found {checkpoint.origin!r}")
    return checkpoint


@dataclass(frozen=True)
class TlogProof:
    index: int
    hashes: tuple[bytes, ...]
    checkpoint: str  # the signed checkpoint note, verbatim
    extra: bytes | None = None

    def text(self) -> str:
        lines = [PROOF_HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode())
        lines.append(f"index {self.index}")
        lines.extend(base64.b64encode(h).decode() for h in self.hashes)
        return "\n".join(lines) + "\n\n" + self.checkpoint


def format_tlog_proof(index: int, hashes: Sequence[bytes], checkpoint_note: str, extra: bytes | None = None) -> str:
    return TlogProof(index, tuple(hashes), checkpoint_note, extra).text()


def parse_tlog_proof(text: str | bytes) -> TlogProof:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise VerificationError("tlog-proof: expected UTF-8 text, found invalid bytes") from exc
    head, sep, checkpoint = text.partition("\n\n")
    if not sep:
        raise VerificationError("tlog-proof: expected a blank line before the checkpoint, found none")
    lines = head.split("\n")
    if lines[0] != PROOF_HEADER:
        raise VerificationError(f"tlog-proof: expected first line {PROOF_HEADER!r}, found {lines[0][:60]!r}")
    rest = lines[1:]
    extra = None
    if rest and rest[0].startswith("extra "):
        extra = b64decode_strict(rest[0][len("extra ") :], "tlog-proof extra")
        rest = rest[1:]
    if not rest or not rest[0].startswith("index "):
        raise VerificationError("tlog-proof: expected an 'index N' line, found none")
    index = _parse_decimal(rest[0][len("index ") :], "tlog-proof index")
    hashes = []
    for i, line in enumerate(rest[1:]):
        h = b64decode_strict(line, f"tlog-proof hash {i}")
        if len(h) != HASH_SIZE:
            raise VerificationError(f"tlog-proof hash {i}: expected {HASH_SIZE} bytes, found {len(h)}")
        hashes.append(h)
    return TlogProof(index, tuple(hashes), checkpoint, extra)


def verify_tlog_proof(
    text: str | bytes, entry_leaf_hash: bytes, verifiers: list[Verifier], origin: str | None = None
) -> tuple[TlogProof, Checkpoint]:
    """Check a tlog-proof for an entry whose leaf hash is given: signature, origin and inclusion."""
    proof = parse_tlog_proof(text)
    checkpoint = open_checkpoint(proof.checkpoint, verifiers, origin)
    verify_inclusion(proof.index, checkpoint.size, entry_leaf_hash, proof.hashes, checkpoint.root)
    return proof, checkpoint


def verify_tlog_proof_for_entry(
    text: str | bytes, entry: bytes, verifiers: list[Verifier], origin: str | None = None
) -> tuple[TlogProof, Checkpoint]:
    """As :func:`verify_tlog_proof`, for the entry's bytes (the leaf data)."""
    return verify_tlog_proof(text, leaf_hash(entry), verifiers, origin)
