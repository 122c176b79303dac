"""Helpers for the ingest tests: a real pipeline on a database URL, message variants, MLLP I/O."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
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
