"""One HTTP session per FHIR source: rate limiting, retries with backoff honouring ``Retry-After``, auth.

429, 408 and 5xx answers, connection failures and timeouts are retried by :class:`~.policy.RetryPolicy`;
every retry is reported through ``on_fault`` (what happened, where, how long until the next try), so a
sync can list its faults.  A 401 makes the auth strategy fetch a new token, once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import requests

from . import policy
from .auth import Auth, make_auth
from .errors import SourceHTTPError
from .sources import FhirSource

log = logging.getLogger("fhir_bridge.fhir_source")

FHIR_JSON = "application/fhir+json"
USER_AGENT = "fhir-bridge"

Fault = Callable[[str], None]


class SourceClient:
    def __init__(self, source: FhirSource, on_fault: Fault | None = None,
                 sleep: Callable[[float], None] = time.sleep, session: requests.Session | None = None) -> None:
        self.source = source
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.retry = policy.RetryPolicy(source.max_attempts, source.backoff_base, source.backoff_max)
        self.auth: Auth = make_auth(source.auth, self.session, source.base, source.timeout)
        self.on_fault = on_fault or (lambda text: None)
        self._sleep = sleep
        self._last: float | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self.session.close()

    def _throttle(self) -> None:
        with self._lock:
            wait = policy.rate_limit_wait(self._last, self.source.rate_limit, time.monotonic())
            if wait > 0:
                self._sleep(wait)
            self._last = time.monotonic()

    def _fault(self, text: str) -> None:
        log.warning("source %s: %s", self.source.name, text)
        self.on_fault(text)

    def request(self, method: str, url: str, *, headers: dict[str, str] | None = None, params: Any = None,
                stream: bool = False, auth: bool = True, ok: tuple[int, ...] = (200,)) -> requests.Response:
        """Send with retries; returns a response whose status is in ``ok`` or raises SourceHTTPError."""
        attempt, reauthenticated = 0, False
        while True:
            attempt += 1
            self._throttle()
            sent = {"Accept": FHIR_JSON, **(headers or {})}
            if auth:
                value = self.auth.header()
                if value:
                    sent["Authorization"] = value
            try:
                response = self.session.request(method, url, headers=sent, params=params, stream=stream,
                                                timeout=self.source.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                what = "timed out" if isinstance(exc, requests.Timeout) else "connection failed"
                self._retry_or_raise(attempt, None, f"{method} {short_url(url)} {what}", None)
                continue
            if response.status_code in ok:
                return response
            if response.status_code == 401 and auth and not reauthenticated:
                response.close()
                self.auth.invalidate()
                reauthenticated = True
                attempt -= 1
                continue
            text = f"{method} {short_url(url)} answered HTTP {response.status_code}"
            if policy.retryable(response.status_code):
                retry_after = policy.parse_retry_after(response.headers.get("Retry-After"), datetime.now(UTC))
                response.close()
                self._retry_or_raise(attempt, retry_after, text, response.status_code)
                continue
            detail = _diagnostics(response)
            response.close()
            raise SourceHTTPError(f"{text}{detail}; {_advice(response.status_code)}", response.status_code)

    def _retry_or_raise(self, attempt: int, retry_after: float | None, text: str, status: int | None) -> None:
        delay = self.retry.delay(attempt, retry_after)
        if delay is None:
            self._fault(f"{text}; giving up after {attempt} attempts")
            raise SourceHTTPError(f"{text}; gave up after {attempt} attempts; the next sync resumes from the "
                                  "last committed point", status)
        self._fault(f"{text}; retry {attempt} in {delay:.2f} s")
        self._sleep(delay)

    def get_json(self, url: str, params: Any = None) -> tuple[dict, requests.Response]:
        response = self.request("GET", url, params=params)
        try:
            body = response.json()
        except ValueError as exc:
            raise SourceHTTPError(f"GET {short_url(url)} answered with something that is not JSON") from exc
        if not isinstance(body, dict):
            raise SourceHTTPError(f"GET {short_url(url)} answered JSON that is not a FHIR resource")
        return body, response


_SECRET_PARAMS = ("token", "signature", "sig", "key", "credential", "secret", "password")


def short_url(url: str) -> str:
    """A URL fit for logs: without a query that may carry credentials (pre-signed file URLs), at most 200 chars."""
    base, _, query = url.partition("?")
    if query and any(word in query.lower() for word in _SECRET_PARAMS):
        url = base + "?(query withheld)"
    return url if len(url) <= 200 else url[:200] + "..."


def _diagnostics(response: requests.Response) -> str:
    try:
        body = response.json()
        issues = body.get("issue") or []
        text = "; ".join(str(i.get("diagnostics") or i.get("details", {}).get("text") or i.get("code")) for i in issues[:3])
        return f" ({text[:300]})" if text else ""
    except (ValueError, AttributeError):
        return ""


def _advice(status: int) -> str:
    if status in (401, 403):
        return "check the source's auth settings and the scopes granted to this client"
    if status == 404:
        return "check base_url and that the server supports this resource type or operation"
    return "see the server's answer; fix the request or the source's settings"
