"""Offline verification of a FHIR Bundle served by the bridge, entry by entry (pure; no I/O).

What the bridge puts in a Bundle (searchset, history, ``$everything``):

* ``Bundle.meta.extension`` :data:`EXT_CHECKPOINT` (``valueString``): the signed C2SP checkpoint
  every entry is proven against; :data:`EXT_ANCHOR` (complex): where that checkpoint is anchored.
* ``Bundle.entry.extension`` :data:`EXT_SALT` (``valueBase64Binary``): the version's salt;
  :data:`EXT_PROOF` (``valueString``): its c2sp.org/tlog-proof@v1 text against that checkpoint.

For each entry: ``sha256 = SHA-256(salt || JCS(entry.resource))``; the leaf is
``JCS({"type", "id", "version", "sha256"})`` with type, id and ``meta.versionId`` of the resource;
the proof must verify the leaf's inclusion in the checkpoint, whose signature must verify under the
verifier key.  An entry not yet covered by a checkpoint carries :data:`EXT_PENDING` instead of a
proof and fails verification ("not yet provable"): ask again after the next checkpoint.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from typing import Any

from .checkpoint import Checkpoint, open_checkpoint, parse_tlog_proof
from .errors import VerificationError
from .jcs import canonicalize
from .merkle import leaf_hash, verify_inclusion
from .note import Verifier

EXT_BASE = "https://fhir-bridge.dev/fhir/StructureDefinition/"
EXT_CHECKPOINT = EXT_BASE + "log-checkpoint"
EXT_ANCHOR = EXT_BASE + "log-anchor"
EXT_SALT = EXT_BASE + "log-salt"
EXT_PROOF = EXT_BASE + "log-proof"
EXT_PENDING = EXT_BASE + "log-proof-pending"

#: sub-extensions of EXT_ANCHOR, each with the value type it carries
ANCHOR_FIELDS = {
    "backend": "valueCode", "status": "valueCode", "size": "valueString", "chainId": "valueString",
    "contract": "valueString", "transactionHash": "valueString", "blockNumber": "valueString",
    "blockHash": "valueString", "journalSequence": "valueString",
}  # numbers as decimal strings: R4's valueInteger is 32-bit, and chain ids and sizes can exceed it


def salted_sha256(salt: bytes, canonical_resource: bytes) -> str:
    return hashlib.sha256(salt + canonical_resource).hexdigest()


def leaf_data(res_type: str, res_id: str, version: int, sha256_hex: str) -> bytes:
    return canonicalize({"type": res_type, "id": res_id, "version": version, "sha256": sha256_hex})


def _extension(holder: Any, url: str) -> dict | None:
    if not isinstance(holder, dict):
        return None
    found = [e for e in holder.get("extension") or [] if isinstance(e, dict) and e.get("url") == url]
    if len(found) > 1:
        raise VerificationError(f"extension {url}: expected at most one, found {len(found)}")
    return found[0] if found else None


def _value(ext: dict | None, kind: str, what: str) -> Any:
    if ext is None or kind not in ext:
        raise VerificationError(f"{what}: expected an extension with {kind}, found none")
    return ext[kind]


def _canonical_b64(text: str, what: str) -> bytes:
    """Base64 that is the one encoding of its bytes: spare bits set or other variants would let a
    changed text verify, so they are refused."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise VerificationError(f"{what}: expected base64, found {text[:20]!r}") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise VerificationError(f"{what}: expected canonical base64, found a variant encoding")
    return raw


def check_note_encoding(note: str) -> None:
    """The signature lines of a signed note in canonical base64 (the signed text is covered by them)."""
    _, sep, signatures = note.partition("\n\n")
    for line in signatures.split("\n") if sep else []:
        if line:
            _canonical_b64(line.rsplit(" ", 1)[-1], "checkpoint signature")


def anchor_reference(bundle: dict) -> dict | None:
    """The Bundle's anchor reference as a plain dict (field name -> value), or None."""
    ext = _extension(bundle.get("meta"), EXT_ANCHOR)
    if ext is None:
        return None
    out: dict[str, Any] = {}
    for sub in ext.get("extension") or []:
        name = sub.get("url") if isinstance(sub, dict) else None
        kind = ANCHOR_FIELDS.get(name or "")
        if kind and kind in sub:
            out[name] = sub[kind]
    return out


@dataclass
class EntryResult:
    position: int  # 0-based, in Bundle.entry
    reference: str  # Type/id/_history/version as the resource says, or what could be read
    index: int | None = None
    hash_ok: bool = False
    inclusion_ok: bool = False
    checkpoint_ok: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class BundleReport:
    checkpoint: Checkpoint | None
    checkpoint_error: str | None
    anchor: dict | None
    entries: list[EntryResult] = field(default_factory=list)
    anchor_ok: bool | None = None  # None: not checked (no RPC endpoint, or no anchor reference)
    anchor_detail: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.checkpoint_error is None and bool(self.entries) and all(e.ok for e in self.entries)
            and self.anchor_ok is not False
        )


def verify_entry(position: int, entry: Any, checkpoint: Checkpoint | None, checkpoint_note: str | None,
                 checkpoint_error: str | None) -> EntryResult:
    result = EntryResult(position, f"entry {position}")
    try:
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            raise VerificationError("entry: expected a resource, found none")
        resource = entry["resource"]
        res_type, res_id = resource.get("resourceType"), resource.get("id")
        version_text = (resource.get("meta") or {}).get("versionId")
        if not isinstance(res_type, str) or not isinstance(res_id, str) or not isinstance(version_text, str) \
                or not version_text.isdigit():
            raise VerificationError("resource: expected resourceType, id and a numeric meta.versionId")
        result.reference = f"{res_type}/{res_id}/_history/{version_text}"
        if _extension(entry, EXT_PENDING) is not None:
            raise VerificationError("proof: not yet provable (the version is newer than the Bundle's checkpoint)")
        salt = _canonical_b64(str(_value(_extension(entry, EXT_SALT), "valueBase64Binary", "salt")), "salt")
        digest = salted_sha256(salt, canonicalize(resource))
        entry_leaf = leaf_hash(leaf_data(res_type, res_id, int(version_text), digest))
        result.hash_ok = True
        proof_text = str(_value(_extension(entry, EXT_PROOF), "valueString", "proof"))
        proof = parse_tlog_proof(proof_text)
        if proof.text() != proof_text:
            raise VerificationError("proof: expected a tlog-proof in canonical form, found a variant encoding")
        result.index = proof.index
        if checkpoint is None or checkpoint_note is None:
            raise VerificationError(f"checkpoint: {checkpoint_error or 'missing'}")
        if proof.checkpoint != checkpoint_note:
            raise VerificationError("proof: expected the Bundle's checkpoint in the tlog-proof, found another")
        result.checkpoint_ok = True
        verify_inclusion(proof.index, checkpoint.size, entry_leaf, proof.hashes, checkpoint.root)
        result.inclusion_ok = True
    except VerificationError as exc:
        result.error = str(exc)
    except (ValueError, TypeError, AttributeError) as exc:  # malformed content of any other kind
        result.error = f"entry: malformed ({type(exc).__name__}: {exc})"
    return result


def verify_bundle(bundle: Any, verifiers: list[Verifier], origin: str | None = None) -> BundleReport:
    """Verify every entry of a Bundle against its checkpoint; never raises for bad content."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise VerificationError("expected a FHIR Bundle, found something else")
    checkpoint, note, error = None, None, None
    try:
        note = str(_value(_extension(bundle.get("meta"), EXT_CHECKPOINT), "valueString", "Bundle checkpoint"))
        checkpoint = open_checkpoint(note, verifiers, origin)
        check_note_encoding(note)
    except VerificationError as exc:
        error = str(exc)
    report = BundleReport(checkpoint, error, anchor_reference(bundle))
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise VerificationError("Bundle.entry: expected a list")
    report.entries = [verify_entry(i, e, checkpoint, note, error) for i, e in enumerate(entries)]
    return report
