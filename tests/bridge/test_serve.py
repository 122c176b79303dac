"""`fhir-bridge serve` for real: a gunicorn-served API and the background log job, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from anchoring.checkpoint import verify_tlog_proof_for_entry
from anchoring.note import read_key_file

from ..components import free_port


@pytest.fixture
def served(tmp_path):
    port = free_port()
    env = dict(os.environ)
    env.update(
        FHIR_BRIDGE_DATA_DIR=str(tmp_path / "data"),
        FHIR_BRIDGE_PORT=str(port),
        FHIR_BRIDGE_MLLP_PORT=str(free_port()),  # not the default 2575, which another run may hold
        FHIR_BRIDGE_WORKERS="2",
        FHIR_BRIDGE_SEQUENCE_INTERVAL="0.2",
        FHIR_BRIDGE_CHECKPOINT_INTERVAL="0.3",
        FHIR_BRIDGE_AUDIT_FOLD_INTERVAL="0.2",
        FHIR_BRIDGE_LOG_ORIGIN="serve.example/log",
    )
    env.pop("FHIR_BRIDGE_DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(base + "/health", timeout=1).status_code == 200:
                break
        except requests.RequestException:  # not listening yet, or slow to answer on a busy machine
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("fhir-bridge serve did not come up:\n" + proc.stdout.read())
        time.sleep(0.1)
    yield base, env, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_serve_creates_a_key_sequences_signs_and_serves_proofs(served, tmp_path):
    base, env, proc = served
    response = requests.get(base + "/health", timeout=5)
    assert "gunicorn" in response.headers.get("Server", ""), "served by a real WSGI server"
    signer = read_key_file(tmp_path / "data" / "log-signing.key")  # created on first start

    entries = []
    for i in range(5):
        path = tmp_path / f"e{i}"
        path.write_bytes(f"record {i}".encode())
        entries.append(path)
    subprocess.run([sys.executable, "-m", "bridge.cli", "log", "append", *map(str, entries)],
                   env=env, check=True, capture_output=True)

    deadline = time.monotonic() + 20
    while True:  # the background job signs a checkpoint once it sees the log grew
        response = requests.get(base + "/log/checkpoint", timeout=5)
        if response.status_code == 200 and response.text.split("\n")[1] == "5":
            break
        assert time.monotonic() < deadline, f"no checkpoint of size 5 was signed: {response.text}"
        time.sleep(0.2)
    proof = requests.get(base + "/log/proof/inclusion", params={"index": 3, "size": 5, "format": "tlog-proof"}, timeout=5)
    assert proof.status_code == 200
    verify_tlog_proof_for_entry(proof.text, b"record 3", [signer.verifier])

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert "PRIVATE" not in proc.stdout.read(), "the signing key never reaches the logs"


def test_serve_stores_what_the_api_workers_spooled(served, tmp_path):
    """Every /fhir request (here refused: no token) is spooled by the gunicorn worker that answered
    it; serve's job stores them as AuditEvent versions without anyone searching for them, and on
    stop no spool file is left."""
    import sqlite3

    base, env, proc = served
    for i in range(6):
        assert requests.get(f"{base}/fhir/Observation/o{i}", timeout=5).status_code == 401
    db = tmp_path / "data" / "fhir-bridge.db"

    def stored() -> list[str]:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return [bytes(r[0]).decode() for r in conn.execute(
                "SELECT content FROM resource_versions WHERE res_type = 'AuditEvent'")]

    deadline = time.monotonic() + 20
    while len(stored()) < 6:
        assert time.monotonic() < deadline, f"the spooled AuditEvents were not stored: {len(stored())} of 6"
        time.sleep(0.2)
    assert sorted('"outcome":"4"' in e and "Observation/o" not in e for e in stored()) == [True] * 6, \
        "refused, and what was asked for is in the query entity only (base64)"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert list((tmp_path / "data" / "audit-spool").glob("*.spool")) == [], "every spool file stored and deleted"
    assert len(stored()) == 6
