"""Pure policy: retry with backoff honouring ``Retry-After``, rate limiting, watermarks, NDJSON lines.

Nothing here does I/O or reads a clock: callers pass ``now`` in, so every rule is tested directly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

#: statuses worth retrying: too many requests, and server-side failures that may pass
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    backoff_base: float = 0.5  # seconds before the second attempt; doubled each time
    backoff_max: float = 60.0  # no single wait is longer (nor a server's Retry-After beyond this)
    jitter: float = 0.1  # +/- fraction, so that many bridges do not retry in lockstep

    def delay(self, attempt: int, retry_after: float | None = None, rand: float | None = None) -> float | None:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1), or None: give up.

        A server's ``Retry-After`` wins over the computed backoff (capped at ``backoff_max``).
        """
        if attempt >= self.max_attempts:
            return None
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.backoff_max)
        base = min(self.backoff_base * 2 ** (attempt - 1), self.backoff_max)
        r = random.random() if rand is None else rand
        return max(0.0, base * (1 + self.jitter * (2 * r - 1)))


def retryable(status: int) -> bool:
    return status in RETRY_STATUSES


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After``: delay-seconds or an HTTP-date (RFC 9110 10.2.3); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def rate_limit_wait(last_request: float | None, rate: float, now: float) -> float:
    """Seconds to wait so that requests are at least ``1/rate`` apart (``rate`` <= 0: no limit)."""
    if rate <= 0 or last_request is None:
        return 0.0
    return max(0.0, last_request + 1.0 / rate - now)


# -- watermarks ------------------------------------------------------------------------------

def parse_instant(value: str | None) -> datetime | None:
    """A FHIR instant (or an HTTP date) as an aware datetime; None if absent or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_instant(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def later(a: str | None, b: str | None) -> str | None:
    """The later of two instants (either may be None)."""
    pa, pb = parse_instant(a), parse_instant(b)
    if pa is None:
        return b if pb is not None else None
    if pb is None:
        return a
    return a if pa >= pb else b


def next_watermark(previous: str | None, seen_max: str | None, pass_started: str | None) -> str | None:
    """The watermark after a complete pass over one resource type.

    ``seen_max`` is the highest ``meta.lastUpdated`` received; ``pass_started`` the server's time when
    the pass began (``Bundle.meta.lastUpdated`` or the ``Date`` header of the first page).  Offset
    paging over data that changes during the pass can skip a resource that moved; everything that
    changed during the pass has ``lastUpdated`` after ``pass_started``, so the watermark never goes
    beyond it, and the next pass asks for those again.  It never goes backwards either.
    """
    candidate = seen_max
    started = parse_instant(pass_started)
    seen = parse_instant(seen_max)
    if started is not None and seen is not None and started < seen:
        candidate = format_instant(started)
    return later(previous, candidate)


def since_parameter(watermark: str | None, overlap_seconds: float) -> str | None:
    """The value searched for (``_lastUpdated=gt...``): the watermark less a safety overlap."""
    when = parse_instant(watermark)
    if when is None:
        return None
    if overlap_seconds > 0:
        from datetime import timedelta

        when = when - timedelta(seconds=overlap_seconds)
    return format_instant(when)


# -- NDJSON ----------------------------------------------------------------------------------

def split_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines (without their newline) and the incomplete rest (no newline yet)."""
    end = buffer.rfind(b"\n")
    if end < 0:
        return [], buffer
    return buffer[:end].split(b"\n"), buffer[end + 1 :]
