"""REST sync of one resource type: search by ``_lastUpdated`` above the watermark, page through ``next`` links.

One transaction per page stores its resources (versions and log leaves together).  The watermark is
advanced only when the last page is in (see :func:`.policy.next_watermark`): an interrupted pass is
simply run again, and content already stored creates no new version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin

from bridge.fhir_ingest import FhirIngest, IngestCounts, now_instant

from . import policy
from .errors import SourceHTTPError
from .http import SourceClient
from .intake import accept
from .sources import FhirSource
from .state import SyncState

Progress = Callable[[str, int, int | None], None]


def next_link(bundle: dict, current_url: str) -> str | None:
    """``Bundle.link`` with relation ``next``, made absolute; None on the last page."""
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return urljoin(current_url, link["url"])
    return None


def matches(bundle: dict) -> tuple[list[dict], list[str]]:
    """The matched resources of a searchset page, and the diagnostics of any OperationOutcome entries."""
    found, notes = [], []
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        mode = (entry.get("search") or {}).get("mode", "match")
        if mode == "outcome" or resource.get("resourceType") == "OperationOutcome":
            notes.extend(str(i.get("diagnostics") or i.get("code")) for i in resource.get("issue") or [])
        elif mode == "match":
            found.append(resource)
    return found, notes


def search_params(res_type: str, watermark: str | None, source: FhirSource) -> dict[str, str]:
    params = {"_count": str(source.page_size)}
    since = policy.since_parameter(watermark, source.overlap)
    if since:
        params["_lastUpdated"] = f"gt{since}"
    return params


@dataclass
class TypeResult:
    res_type: str
    pages: int
    counts: IngestCounts
    watermark: str | None


def sync_type(client: SourceClient, ingest: FhirIngest, state: SyncState, source: FhirSource, res_type: str,
              progress: Progress | None = None, counts: IngestCounts | None = None) -> TypeResult:
    """One pass; ``counts`` (if given) holds what was stored even when the pass fails part way."""
    previous = state.watermark(source.name, res_type)
    url: str | None = f"{source.base}/{res_type}"
    params: dict[str, str] | None = search_params(res_type, previous, source)
    counts = IngestCounts() if counts is None else counts
    seen_max: str | None = None
    started: str | None = None
    total: int | None = None
    pages = 0
    visited: set[str] = set()
    while url:
        bundle, response = client.get_json(url, params)
        if bundle.get("resourceType") != "Bundle":
            raise SourceHTTPError(f"search {res_type} answered a {bundle.get('resourceType')}, not a Bundle")
        if pages == 0:
            started = (bundle.get("meta") or {}).get("lastUpdated") or response.headers.get("Date")
            total = bundle.get("total") if isinstance(bundle.get("total"), int) else None
        pages += 1
        resources, notes = matches(bundle)
        for text in notes:
            client.on_fault(f"search {res_type}: the server says: {text}")
        with ingest.db.transaction(write=True) as cur:
            latest = accept(cur, ingest, source, resources, counts)
        seen_max = policy.later(seen_max, latest)
        if progress:
            progress(res_type, counts.received, total)
        visited.add(response.url)
        url = next_link(bundle, response.url)
        params = None  # a next link carries the whole query
        if url in visited:
            raise SourceHTTPError(f"search {res_type}: the next link repeats {url}; the server's paging is broken")
    watermark = policy.next_watermark(previous, seen_max, started)
    if watermark and watermark != previous:
        with ingest.db.transaction(write=True) as cur:
            state.set_watermark(cur, source.name, res_type, watermark, now_instant())
    return TypeResult(res_type, pages, counts, watermark)
