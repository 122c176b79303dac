"""The id scheme for pulled resources and consistent reference rewriting (pure functions).

A resource pulled from source S, type T, id I is stored as ``T/<local id>`` where

* with ``keep_ids`` (a partner bridge, or one source of truth): the local id is I itself;
* otherwise the local id is ``<prefix>-<I>`` (``prefix`` defaults to the source name), so that two
  hospitals' ``Patient/1`` cannot collide.  If that is longer than FHIR's 64 characters, it is
  ``<prefix>-h<first 32 hex digits of SHA-256("T/I")>``: deterministic, so the same source resource
  always lands on the same local resource, whatever type refers to it.

Every ``reference`` string inside the resource is rewritten the same way, so references stay
consistent across types:

* ``T/I`` and ``T/I/_history/V`` -> ``T/<local id>`` (version numbers are the bridge's own, so a
  version-specific reference is made current);
* an absolute URL under the source's base URL is made relative and rewritten as above;
* contained (``#x``), ``urn:``, conditional (``T?...``) and other servers' absolute URLs are kept.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_RELATIVE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?$")
MAX_ID = 64


def local_id(prefix: str, res_type: str, source_id: str, keep_ids: bool) -> str:
    if keep_ids:
        return source_id
    candidate = f"{prefix}-{source_id}"
    if len(candidate) <= MAX_ID:
        return candidate
    digest = hashlib.sha256(f"{res_type}/{source_id}".encode()).hexdigest()[:32]
    return f"{prefix}-h{digest}"


def id_prefix(name: str) -> str:
    """A source name as an id prefix: characters FHIR ids allow, at most 16."""
    cleaned = re.sub(r"[^A-Za-z0-9\-.]", "-", name).strip("-.") or "src"
    return cleaned[:16]


def rewrite_reference(ref: str, base_url: str, local: Callable[[str, str], str]) -> str:
    """One reference string, rewritten (see the module docstring); ``local(type, id)`` gives ids."""
    base = base_url.rstrip("/") + "/"
    if ref.startswith(base):
        ref = ref[len(base) :]
    match = _RELATIVE.match(ref)
    if match is None:
        return ref
    return f"{match.group(1)}/{local(match.group(1), match.group(2))}"


def rewrite_resource(resource: dict, base_url: str, prefix: str, keep_ids: bool) -> dict:
    """A copy of ``resource`` with its id and every reference rewritten to local ids."""

    def local(res_type: str, source_id: str) -> str:
        return local_id(prefix, res_type, source_id, keep_ids)

    def walk(value: Any, top: bool) -> Any:
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if key == "reference" and isinstance(item, str):
                    out[key] = rewrite_reference(item, base_url, local)
                elif key == "contained" and isinstance(item, list):
                    out[key] = [walk(c, False) for c in item]  # contained ids are local to the resource
                else:
                    out[key] = walk(item, False)
            return out
        if isinstance(value, list):
            return [walk(v, False) for v in value]
        return value

    out = walk(resource, True)
    res_type, res_id = resource.get("resourceType"), resource.get("id")
    if isinstance(res_type, str) and isinstance(res_id, str) and ID_PATTERN.match(res_id):
        out["id"] = local(res_type, res_id)
    return out
