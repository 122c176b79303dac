"""FHIR Bulk Data Access (v2) client: ``$export`` kick-off, status polling, streamed NDJSON download, resumption.

1. Kick-off: ``GET [base]/$export`` (or ``Patient/$export``, ``Group/<id>/$export``) with
   ``Prefer: respond-async``, ``_type`` and ``_since`` (the previous export's ``transactionTime``);
   the server answers 202 with the status URL in ``Content-Location``, which is committed at once.
2. Status: polled until 200, waiting what ``Retry-After`` asks (else ``bulk_poll_interval``); the
   manifest (output files) is committed.
3. Download: each file is streamed in chunks (never whole in memory) and split into lines; every
   ``page_size`` lines are stored in one transaction together with the file's new byte offset.
4. Resumption: after a broken connection (now, or in a later run after a crash) the download asks for
   ``Range: bytes=<offset>-``; a server that ignores Range (200) is read from the start and the first
   ``offset`` bytes are skipped.  Either way the next byte is the first of the next uncommitted line.
5. Done: the watermark becomes the manifest's ``transactionTime``; the job is deleted on the server.

A truncated last line (the connection dropped mid-line) is never stored: only complete lines count,
and a file's last line without newline only when the response ended cleanly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from urllib.parse import urljoin

import requests
from urllib3.exceptions import HTTPError as Urllib3Error

from bridge.fhir_ingest import FhirIngest, IngestCounts, now_instant

from . import policy
from .errors import SourceHTTPError
from .http import SourceClient, short_url
from .intake import accept
from .sources import FhirSource
from .state import BULK, BulkFile, SyncState

Progress = Callable[[str, int, int | None], None]
CHUNK = 64 * 1024


class Truncated(Exception):
    """The body ended before its ``Content-Length``: the connection was dropped."""


BROKEN = (requests.exceptions.ChunkedEncodingError, requests.ConnectionError, requests.Timeout, Urllib3Error, Truncated)


def kickoff_url(source: FhirSource) -> str:
    level = source.bulk_level
    if level == "system":
        return f"{source.base}/$export"
    if level == "patient":
        return f"{source.base}/Patient/$export"
    return f"{source.base}/Group/{level.split('/', 1)[1]}/$export"


def kickoff_params(source: FhirSource, since: str | None) -> dict[str, str]:
    params = {"_type": ",".join(source.resource_types), "_outputFormat": "application/fhir+ndjson"}
    if since:
        params["_since"] = since
    return params


def manifest_files(manifest: dict, status_url: str) -> list[tuple[str, str]]:
    """(absolute URL, resource type) of each output file of a complete-status manifest."""
    files = []
    for item in manifest.get("output") or []:
        if isinstance(item, dict) and isinstance(item.get("url"), str):
            files.append((urljoin(status_url, item["url"]), str(item.get("type") or "")))
    return files


class BulkExport:
    def __init__(self, client: SourceClient, ingest: FhirIngest, state: SyncState, source: FhirSource,
                 progress: Progress | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client, self.ingest, self.state, self.source = client, ingest, state, source
        self.progress, self.sleep = progress, sleep
        self.counts = IngestCounts()
        self.files_done = 0
        self.resumed = False

    def run(self) -> IngestCounts:
        name = self.source.name
        job = self.state.bulk_job(name)
        if job is None:
            status_url = self._kickoff()
            self.state.start_bulk_job(name, status_url, now_instant())
            job = self.state.bulk_job(name)
            assert job is not None  # just written
        else:
            self.resumed = True
        manifest = job.manifest
        if manifest is None:
            manifest = self._poll(job.status_url)
            self.state.set_manifest(name, manifest, manifest_files(manifest, job.status_url))
        self._report_errors(manifest, job.status_url)
        requires_token = bool(manifest.get("requiresAccessToken", True))
        failed: list[str] = []
        for file in self.state.bulk_files(name):
            if not file.done:
                try:
                    self._download(file, requires_token)
                except SourceHTTPError as exc:
                    if exc.status in (404, 410):  # the files expired: only a new export can give them
                        self.state.drop_bulk_job(name)
                        raise SourceHTTPError(f"{short_url(file.url)} is gone (HTTP {exc.status}); the export's files "
                                              "expired; the next sync kicks off a new export", exc.status) from exc
                    failed.append(str(exc))  # the other files are still downloaded in this run
                    continue
            self.files_done += 1
        if failed:
            raise SourceHTTPError(f"{len(failed)} file(s) incomplete, kept for the next sync: " + " | ".join(failed))
        self.state.finish_bulk_job(name, manifest.get("transactionTime"), now_instant())
        try:  # the server may delete the files now (best effort: they expire anyway)
            self.client.request("DELETE", job.status_url, ok=(200, 202, 204, 404, 405, 501))
        except SourceHTTPError:
            pass
        return self.counts

    def _kickoff(self) -> str:
        since = self.state.watermark(self.source.name, BULK)
        response = self.client.request(
            "GET", kickoff_url(self.source), params=kickoff_params(self.source, since),
            headers={"Accept": "application/fhir+json", "Prefer": "respond-async"}, ok=(202,))
        location = response.headers.get("Content-Location")
        response.close()
        if not location:
            raise SourceHTTPError("$export answered 202 without Content-Location; the server is not Bulk Data "
                                  "conformant")
        return urljoin(response.url, location)

    def _poll(self, status_url: str) -> dict:
        deadline = time.monotonic() + self.source.bulk_max_wait
        while True:
            try:
                response = self.client.request("GET", status_url, headers={"Accept": "application/json"}, ok=(200, 202))
            except SourceHTTPError as exc:
                if exc.status in (404, 410):  # the job expired or was cancelled: start again next time
                    self.state.drop_bulk_job(self.source.name)
                    raise SourceHTTPError(f"the export job {status_url} is gone (HTTP {exc.status}); the next sync "
                                          "kicks off a new export", exc.status) from exc
                if exc.status is not None and 400 <= exc.status < 500:  # Bulk Data: the export failed for good
                    self.state.drop_bulk_job(self.source.name)
                    raise SourceHTTPError(f"the export failed at the server: {exc}; the next sync kicks off a new "
                                          "export", exc.status) from exc
                raise  # 5xx after every retry: the job is kept and polled again by the next sync
            if response.status_code == 200:
                try:
                    manifest = response.json()
                except ValueError as exc:
                    raise SourceHTTPError(f"the export status {status_url} answered 200 without a JSON manifest") from exc
                if not isinstance(manifest, dict) or not isinstance(manifest.get("output"), list):
                    raise SourceHTTPError(f"the export manifest at {status_url} has no output list")
                return manifest
            progress = response.headers.get("X-Progress", "")
            if self.progress:
                self.progress(f"$export {progress or 'in progress'}", 0, None)
            wait = policy.parse_retry_after(response.headers.get("Retry-After"), _now())
            wait = self.source.bulk_poll_interval if wait is None else min(wait, self.source.backoff_max)
            response.close()
            if time.monotonic() + wait > deadline:
                raise SourceHTTPError(f"the export at {status_url} is not complete after {self.source.bulk_max_wait:.0f}"
                                      " s; the next sync polls it again (the job is kept)")
            self.sleep(wait)

    def _report_errors(self, manifest: dict, status_url: str) -> None:
        for item in manifest.get("error") or []:
            url = item.get("url") if isinstance(item, dict) else None
            if not isinstance(url, str):
                continue
            try:
                response = self.client.request("GET", urljoin(status_url, url), headers={"Accept": "application/fhir+ndjson"})
                for line in response.text.splitlines()[:20]:
                    try:
                        for found in json.loads(line).get("issue") or []:
                            self.client.on_fault(f"$export error: {found.get('diagnostics') or found.get('code')}")
                    except (ValueError, AttributeError):
                        continue
            except SourceHTTPError as exc:
                self.client.on_fault(f"$export error file {short_url(url)} unreadable: {exc}")

    def _download(self, file: BulkFile, requires_token: bool) -> None:
        offset, lines_done, attempt = file.byte_offset, file.lines, 0
        while True:
            attempt += 1
            headers = {"Accept": "application/fhir+ndjson"}
            if offset > 0:
                headers["Range"] = f"bytes={offset}-"
                self.resumed = True
            response = self.client.request("GET", file.url, headers=headers, stream=True, auth=requires_token,
                                           ok=(200, 206, 416))
            if response.status_code == 416 and offset > 0:  # nothing after the offset: the file was complete
                response.close()
                self._commit(file, [], offset, lines_done, True)
                return
            skip = offset if response.status_code == 200 else 0
            if response.status_code == 206 and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                response.close()
                raise SourceHTTPError(f"{short_url(file.url)} answered a range other than the one asked (bytes={offset}-)")
            position = offset  # bytes of the file consumed into complete lines
            buffer, batch, batch_bytes = b"", [], 0
            # Bytes received before a dropped connection are kept (urllib3 would discard the last read
            # with its IncompleteRead); the length is checked below instead.
            response.raw.enforce_content_length = False
            try:
                for chunk in response.iter_content(CHUNK):
                    if skip:
                        dropped = min(skip, len(chunk))
                        chunk, skip = chunk[dropped:], skip - dropped
                    buffer += chunk
                    complete, buffer = policy.split_lines(buffer)
                    for line in complete:
                        batch.append(line)
                        batch_bytes += len(line) + 1
                    if len(batch) >= self.source.page_size:
                        position, lines_done = self._commit(file, batch, position + batch_bytes, lines_done + len(batch), False)
                        batch, batch_bytes = [], 0
                expected = response.headers.get("Content-Length", "")
                if expected.isdigit() and response.raw.tell() < int(expected):
                    raise Truncated(f"{response.raw.tell()} of {expected} bytes")
            except BROKEN as exc:
                response.close()
                if batch:  # complete lines are complete: keep them
                    position, lines_done = self._commit(file, batch, position + batch_bytes, lines_done + len(batch), False)
                text = (f"download of {short_url(file.url)} broke at byte {position + len(buffer)} ({type(exc).__name__}); "
                        f"{len(buffer)} bytes of an incomplete line discarded; resuming at byte {position}")
                offset = position
                delay = self.client.retry.delay(attempt)
                if delay is None:
                    self.client.on_fault(text + "; giving up for now")
                    raise SourceHTTPError(f"download of {short_url(file.url)} kept breaking; the next sync resumes at byte "
                                          f"{position}") from exc
                self.client.on_fault(text)
                self.sleep(delay)
                continue
            if buffer.strip():  # the last line had no newline, and the response ended cleanly
                batch.append(buffer)
                batch_bytes += len(buffer)
            self._commit(file, batch, position + batch_bytes, lines_done + len(batch), True)
            return

    def _commit(self, file: BulkFile, lines: list[bytes], position: int, lines_done: int, done: bool) -> tuple[int, int]:
        with self.ingest.db.transaction(write=True) as cur:
            accept(cur, self.ingest, self.source, lines, self.counts, where=f"{file.url} line {lines_done - len(lines) + 1}"
                   f"-{lines_done}")
            self.state.advance_file(cur, self.source.name, file.url, position, lines_done, done)
        if self.progress:
            self.progress(file.res_type or "ndjson", self.counts.received, None)
        return position, lines_done


def _now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC)
