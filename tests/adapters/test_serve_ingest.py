"""`fhir-bridge serve` wires the MLLP listener and the file watcher beside the API and the log jobs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bridge.db import open_database
from bridge.inbox import Inbox
from tests.components import free_port
from tests.ingest_support import acks_from, mllp_file, variants

ROOT = Path(__file__).resolve().parents[2]


def wait_for(check, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_serve_runs_mllp_and_file_inbox(mllp_send: str, database_url: str, corpus: Path, tmp_path: Path) -> None:
    mllp_port, api_port = free_port(), free_port()
    inbox_dir = tmp_path / "drop"
    env = dict(os.environ, PYTHONPATH=str(ROOT), FHIR_BRIDGE_MLLP_PORT=str(mllp_port),
               FHIR_BRIDGE_INBOX_DIR=str(inbox_dir), FHIR_BRIDGE_INBOX_POLL_INTERVAL="0.2",
               FHIR_BRIDGE_WORKERS="1", FHIR_BRIDGE_MLLP_IDLE_TIMEOUT="1.5")
    serve = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "--data-dir", str(tmp_path / "data"), "--database-url", database_url,
         "serve", "--port", str(api_port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        assert wait_for(lambda: listening(mllp_port) or serve.poll() is not None), "MLLP did not start"
        assert serve.poll() is None, serve.stderr.read().decode()[-3000:]
        with socket.create_connection(("127.0.0.1", mllp_port), timeout=10) as idle:  # the setting reaches the listener
            started = time.monotonic()
            assert idle.recv(1) == b"" and 1.0 < time.monotonic() - started < 8, "an idle connection was not closed"
        template = (corpus / "hl7v2/microsoft-FHIR-Converter/ADT-A01-02.hl7").read_bytes()
        sent = subprocess.run([mllp_send, "-p", str(mllp_port), "-f",
                               str(mllp_file(tmp_path / "m.mllp", variants(template, 3, "SRV"))), "127.0.0.1"],
                              capture_output=True, timeout=60)
        assert acks_from(sent.stdout) == [("AA", "SRV-0"), ("AA", "SRV-1"), ("AA", "SRV-2")]
        (inbox_dir / "drop.hl7").write_bytes(variants(template, 1, "FILE")[0])
        assert wait_for(lambda: (inbox_dir / "processed/drop.hl7").exists(), 30), "the dropped file was not processed"
        db = open_database(database_url)
        try:
            assert Inbox(db).counts() == {"stored": 4}
        finally:
            db.close()
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            assert serve.wait(30) == 0
        finally:
            if serve.poll() is None:
                serve.kill()
