"""Helpers for the ingest tests: a real pipeline on a database URL, message variants, MLLP I/O."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path

from anchoring.log import MerkleLog
from bridge.db import open_database
from bridge.pipeline import Pipeline, pipeline_from_config

VT, FS, CR = b"\x0b", b"\x1c", b"\r"


@contextmanager
def open_pipeline(database_url: str, override_dir: str | None = None,
                  workers: int = 0) -> Iterator[tuple[Pipeline, MerkleLog]]:
    """A pipeline on a fresh log; ``workers``: conversion worker processes, stopped at the end."""
    db = open_database(database_url)
    try:
        log = MerkleLog(db, "test.example/log")
        log.ensure_schema()
        pipeline = pipeline_from_config(db, override_dir, workers=workers)
        try:
            yield pipeline, log
        finally:
            pipeline.close()
    finally:
        db.close()


def hl7_files(corpus: Path) -> list[Path]:
    return sorted(p for p in (corpus / "hl7v2").rglob("*.hl7") if p.is_file())


def variants(template: bytes, count: int, tag: str) -> list[bytes]:
    """``count`` distinct messages from one: MSH-10 and the patient (PID-3, PID-2 emptied) made unique."""
    lines = re.split(rb"\r\n|\r|\n", template.lstrip(b"\xef\xbb\xbf"))
    lines = [line for line in lines if line.strip()]
    out = []
    for i in range(count):
        msg = []
        for line in lines:
            sep = line[3:4]
            if line.startswith(b"MSH"):
                fields = line.split(sep)
                fields[9] = f"{tag}-{i}".encode()
                line = sep.join(fields)
            elif line.startswith(b"PID"):
                fields = line.split(sep)
                while len(fields) < 4:
                    fields.append(b"")
                fields[2] = b""  # PID-2 (old external id) would key the patient instead
                fields[3] = f"{tag}{i}".encode() + b"^^^HOSP^MR"
                line = sep.join(fields)
            msg.append(line)
        out.append(b"\r".join(msg) + b"\r")
    return out


# What differs from one message of a feed to the next, beyond MSH-10 and the patient's id: times,
# names, birth dates, addresses, visit and order numbers, numeric results; staff and beds come from
# pools (a ward sees the same few dozen doctors).  Per segment: (field, component or 0 for the whole
# field, value for message i).  Only fields the template fills are changed, so its shape stays.
_STAFF, _BEDS, _GIVEN = 60, 40, 300


def _when(i: int, hours: int = 0) -> str:
    return (datetime(2026, 1, 1) + timedelta(seconds=37 * i, hours=hours)).strftime("%Y%m%d%H%M%S")


def _staff(role: int) -> Callable[[int], str]:
    """Ids of the template's doctor in one role: a pool of its own, so an id always has one name."""
    return lambda i: f"D{role}{(7 * i) % _STAFF:03d}"


_FEED_CHANGES: dict[bytes, list[tuple[int, int, Callable[[int], str]]]] = {
    b"MSH": [(7, 0, _when)],
    b"EVN": [(2, 0, _when)],
    b"PID": [(5, 1, lambda i: f"Family{i}"), (5, 2, lambda i: f"Given{i % _GIVEN}"),
             (7, 0, lambda i: (date(1930, 1, 1) + timedelta(days=(7919 * i) % 33000)).strftime("%Y%m%d")),
             (11, 1, lambda i: f"{i % 9000 + 1} Main Street"), (11, 5, lambda i: f"{10000 + i % 89999}"),
             (13, 1, lambda i: f"555{i % 10_000_000:07d}"), (18, 1, lambda i: f"ACC{i}")],
    b"PV1": [(3, 3, lambda i: f"Bed {i % _BEDS:02d}"), (7, 1, _staff(1)), (8, 1, _staff(2)), (9, 1, _staff(3)),
             (17, 1, _staff(4)), (19, 1, lambda i: f"V{i}"), (44, 0, lambda i: _when(i, -30))],
    b"ORC": [(2, 1, lambda i: f"P{i}"), (3, 1, lambda i: f"F{i}"), (9, 0, _when), (12, 1, _staff(5))],
    b"OBR": [(2, 1, lambda i: f"P{i}"), (3, 1, lambda i: f"F{i}"), (7, 0, lambda i: _when(i, -2)),
             (16, 1, _staff(5)), (22, 0, _when)],
    b"OBX": [(14, 0, lambda i: _when(i, -2)), (16, 1, _staff(6)), (19, 0, lambda i: _when(i, -1))],
}


def feed_variants(template: bytes, count: int, tag: str) -> list[bytes]:
    """``count`` messages from one as a feed sends them: :func:`variants`, and each also with its own
    times, patient details, visit and order numbers and numeric results (``_FEED_CHANGES``)."""
    out = []
    for i, message in enumerate(variants(template, count, tag)):
        segments = []
        for line in message.split(b"\r")[:-1]:
            sep, name = line[3:4], line[:3]
            fields = line.split(sep)
            offset = 1 if name == b"MSH" else 0  # MSH-1 is the separator itself
            comp = b"^" if name != b"MSH" else fields[1][:1]
            for number, component, value in _FEED_CHANGES.get(name, []):
                at = number - offset
                if at >= len(fields) or not fields[at]:
                    continue
                new = value(i).encode()
                if component == 0:
                    fields[at] = new
                else:
                    repetitions = fields[at].split(b"~")  # the first one changes
                    parts = repetitions[0].split(comp)
                    if component <= len(parts) and parts[component - 1]:
                        parts[component - 1] = new
                        fields[at] = b"~".join([comp.join(parts), *repetitions[1:]])
            if name == b"OBX" and len(fields) > 5 and fields[2] == b"NM" and fields[5]:
                fields[5] = f"{20 + (13 * i) % 160}".encode()  # a numeric result
            segments.append(sep.join(fields))
        out.append(b"\r".join(segments) + b"\r")
    return out


def mllp_file(path: Path, messages: list[bytes]) -> Path:
    """A file in the form `mllp_send -f` reads without --loose: framed messages back to back."""
    path.write_bytes(b"".join(VT + m + FS + CR for m in messages))
    return path


def acks_from(output: bytes) -> list[tuple[str, str]]:
    """(MSA-1, MSA-2) of every ACK in a byte stream (mllp_send's stdout, or a socket's)."""
    found = []
    for chunk in output.split(FS):
        text = chunk.replace(VT, b"").decode("utf-8", errors="replace")
        for segment in re.split(r"\r|\n", text):
            if segment.startswith("MSA"):
                fields = segment.split(segment[3]) if len(segment) > 3 else []
                found.append((fields[1] if len(fields) > 1 else "", fields[2] if len(fields) > 2 else ""))
    return found


def exchange(port: int, payload: bytes, timeout: float = 10.0, host: str = "127.0.0.1") -> bytes:
    """Send raw bytes, half-close, read everything the server answers until it closes."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)
