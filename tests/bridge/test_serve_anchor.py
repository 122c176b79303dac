"""`fhir-bridge serve` runs the anchoring job: after downtime it catches up at once, and a
restart never anchors a checkpoint twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from anchoring.anchors.local import LocalJournal
from anchoring.note import read_key_file
from bridge.cli import main
from tests.components import free_port

ORIGIN = "serve.example/log"


def _serve(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bridge.cli", "serve", "--port", str(free_port())],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_records(journal: LocalJournal, count: int, process: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if journal.path.exists() and len(journal.records()) >= count:
            return
        if process.poll() is not None:
            raise AssertionError(f"serve exited: {process.stderr.read().decode()[-2000:]}")
        time.sleep(0.1)
    raise AssertionError(f"no anchor within {timeout} s")


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(30)
    process.stderr.close()


def test_serve_catches_up_after_downtime(tmp_path: Path, monkeypatch):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_BRIDGE_")}
    env.update(FHIR_BRIDGE_DATA_DIR=str(tmp_path / "data"), FHIR_BRIDGE_LOG_ORIGIN=ORIGIN,
               FHIR_BRIDGE_ANCHOR_PERIOD="3600", FHIR_BRIDGE_CHECKPOINT_INTERVAL="3600")
    for name, value in env.items():
        if name.startswith("FHIR_BRIDGE_"):
            monkeypatch.setenv(name, value)
    entry = tmp_path / "entry.json"
    entry.write_text('{"resourceType": "Patient"}')
    assert main(["keygen"]) == 0
    assert main(["log", "append", str(entry), str(entry)]) == 0  # logged while serve was down

    signer = read_key_file(tmp_path / "data" / "log-signing.key")
    journal = LocalJournal(tmp_path / "data" / "anchor-journal.jsonl", signer, [signer.verifier])
    process = _serve(env)
    try:
        _wait_for_records(journal, 1, process)  # the first round runs at start, not after the period
    finally:
        _stop(process)

    assert main(["log", "append", str(entry)]) == 0
    process = _serve(env)
    try:
        _wait_for_records(journal, 2, process)
        time.sleep(0.5)
    finally:
        _stop(process)
    assert [r.checkpoint.size for r in journal.records()] == [2, 3]  # each checkpoint anchored once
