"""Resources received from a source, into the store: rewrite ids and references, validate, store or keep as rejected."""

from __future__ import annotations

import json
from collections.abc import Iterable

from anchoring.db import Cursor
from bridge.fhir_ingest import FhirIngest, IngestCounts, issue, outcome, validation_outcome

from . import policy
from .references import ID_PATTERN, local_id, rewrite_resource
from .sources import FhirSource


def source_label(source: FhirSource) -> str:
    return f"fhir:{source.name}"


def accept(cur: Cursor, ingest: FhirIngest, source: FhirSource, items: Iterable[dict | bytes],
           counts: IngestCounts, where: str = "") -> str | None:
    """Store each valid resource (rewritten) and keep each invalid one; returns the latest ``meta.lastUpdated``.

    ``items`` are parsed resources (REST) or raw NDJSON lines (bulk); a line that is not JSON is kept
    as rejected too, with the place it came from (``where``).
    """
    label = source_label(source)
    latest: str | None = None
    for item in items:
        if isinstance(item, bytes):
            text = item.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            try:
                resource = json.loads(text)
            except ValueError as exc:
                why = outcome([issue("structure", f"not JSON ({exc.msg} at character {exc.pos}): the line is "
                                                  f"truncated or corrupt{'; ' + where if where else ''}")])
                ingest.reject(cur, label, "", "", text, why, counts)
                continue
        else:
            resource, text = item, ""
        res_type = resource.get("resourceType") if isinstance(resource, dict) else None
        source_id = resource.get("id") if isinstance(resource, dict) else None
        why = None
        if not isinstance(source_id, str) or not source_id:
            why = outcome([issue("required", "a resource from a FHIR server must have an id", f"{res_type}.id")])
        if why is None:
            rewritten = rewrite_resource(resource, source.base, source.prefix, source.keep_ids)
            why = validation_outcome(rewritten)
        if why is not None:
            content = text or json.dumps(resource, ensure_ascii=False, separators=(",", ":"))
            known = isinstance(source_id, str) and ID_PATTERN.match(source_id) and isinstance(res_type, str)
            kept_id = local_id(source.prefix, res_type, source_id, source.keep_ids) if known else str(source_id or "")
            ingest.reject(cur, label, str(res_type or ""), kept_id, content, why, counts)
        else:
            ingest.put(cur, label, rewritten, counts)
        meta = resource.get("meta") if isinstance(resource, dict) else None
        if isinstance(meta, dict) and isinstance(meta.get("lastUpdated"), str):
            latest = policy.later(latest, meta["lastUpdated"])
    return latest
