"""Bundles with proofs: every entry carries its version's salt and tlog-proof, all against one checkpoint.

The Bundle text is assembled around each version's stored JCS bytes, which are valid JSON and
exactly what the leaf commits to: nothing is re-serialised, so a partner re-canonicalising
``entry.resource`` recomputes the stored bytes.  Extension URLs: :mod:`anchoring.bundle_verify`.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from anchoring.anchors.store import AnchorRecord, AnchorStore
from anchoring.bundle_verify import EXT_ANCHOR, EXT_CHECKPOINT, EXT_PENDING, EXT_PROOF, EXT_SALT
from anchoring.log import StoredCheckpoint

from ..audit import now_instant
from ..store import StoredVersion
from .context import services
from .fhir_common import base_url, data

ANCHORED = ("confirmed", "included")


@dataclass(frozen=True)
class Entry:
    version: StoredVersion
    mode: str | None = None  # searchset: "match" or "include"; history: None (request/response instead)


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _anchor_records(size: int) -> list[AnchorRecord]:
    try:
        store = AnchorStore(services().db)
        return store.for_size(size)
    except Exception:  # the anchors table does not exist yet (no anchoring round ran)
        return []


def choose_checkpoint(versions: Sequence[StoredVersion]) -> tuple[StoredCheckpoint | None, AnchorRecord | None]:
    """The latest anchored checkpoint if it covers every version, else the latest checkpoint."""
    log = services().log
    latest = log.latest_checkpoint()
    if latest is None:
        return None, None
    records = [r for r in _anchor_records(latest.checkpoint.size) if r.status in ANCHORED]
    if records:
        return latest, records[0]
    try:
        anchored = [r for r in AnchorStore(services().db).list(statuses=ANCHORED, limit=1)]
    except Exception:
        anchored = []
    if anchored:
        indices = data().leaf_indices([v.queue_id for v in versions])
        needed = max(indices.values(), default=-1) + 1
        if len(indices) == len({v.queue_id for v in versions}) and needed <= anchored[0].size:
            stored = log.stored_checkpoint(anchored[0].size)
            if stored is not None:
                return stored, anchored[0]
    pending = [r for r in _anchor_records(latest.checkpoint.size)]
    return latest, (pending[0] if pending else None)


def anchor_extension(record: AnchorRecord) -> dict:
    backend = record.target.split(":", 1)[0]
    fields: list[tuple[str, str, object]] = [("backend", "valueCode", backend), ("status", "valueCode", record.status),
                                             ("size", "valueString", str(record.size))]
    if backend == "evm":
        fields += [("chainId", "valueString", None if record.chain_id is None else str(record.chain_id)),
                   ("contract", "valueString", record.contract),
                   ("transactionHash", "valueString", record.tx_hash),
                   ("blockNumber", "valueString", None if record.block_number is None else str(record.block_number)),
                   ("blockHash", "valueString", record.block_hash)]
    else:
        fields += [("transactionHash", "valueString", record.tx_hash),
                   ("journalSequence", "valueString",
                    None if record.block_number is None else str(record.block_number))]
    return {"url": EXT_ANCHOR, "extension": [{"url": n, k: v} for n, k, v in fields if v is not None]}


def _entry_text(entry: Entry, proof: str | None, history: bool) -> str:
    version = entry.version
    full_url = f"{base_url()}/{version.res_type}/{version.res_id}"
    head: dict = {"fullUrl": full_url}
    extensions = [{"url": EXT_SALT, "valueBase64Binary": base64.b64encode(version.salt).decode()}]
    if proof is not None:
        extensions.append({"url": EXT_PROOF, "valueString": proof})
    else:
        extensions.append({"url": EXT_PENDING, "valueString": "not yet covered by a signed checkpoint; ask again "
                                                              "after the next checkpoint"})
    head["extension"] = extensions
    tail: dict = {}
    if entry.mode:
        tail["search"] = {"mode": entry.mode}
    if history:
        method = "POST" if version.version == 1 else "PUT"
        url = version.res_type if method == "POST" else f"{version.res_type}/{version.res_id}"
        tail["request"] = {"method": method, "url": url}
        tail["response"] = {"status": "201 Created" if method == "POST" else "200 OK",
                            "etag": f'W/"{version.version}"', "lastModified": version.last_updated}
    text = _dumps(head)[:-1] + ',"resource":' + version.content.decode("utf-8")
    if tail:
        text += "," + _dumps(tail)[1:-1]
    return text + "}"


def bundle(kind: str, entries: Sequence[Entry], total: int | None = None,
           links: Sequence[tuple[str, str]] = ()) -> bytes:
    """A Bundle of ``kind`` (searchset, history, ...) whose entries carry salts and proofs."""
    versions = [e.version for e in entries]
    checkpoint, anchor = choose_checkpoint(versions)
    proofs = data().proofs(versions, checkpoint) if checkpoint else [None] * len(versions)
    meta_ext = []
    if checkpoint is not None:
        meta_ext.append({"url": EXT_CHECKPOINT, "valueString": checkpoint.note})
        if anchor is not None:
            meta_ext.append(anchor_extension(anchor))
    now = now_instant()
    head: dict = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "meta": {"lastUpdated": now}, "type": kind,
                  "timestamp": now}
    if meta_ext:
        head["meta"]["extension"] = meta_ext
    if total is not None:
        head["total"] = total
    if links:
        head["link"] = [{"relation": rel, "url": url} for rel, url in links]
    history = kind == "history"
    body = ",".join(_entry_text(e, p, history) for e, p in zip(entries, proofs, strict=True))
    return (_dumps(head)[:-1] + ',"entry":[' + body + "]}").encode("utf-8")
