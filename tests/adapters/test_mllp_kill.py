"""Crash safety: a real server process is killed (SIGKILL) while several `mllp_send` clients stream
messages.  Every message acknowledged AA is in the store after the restart, and sending everything
again creates no duplicate message and no new version."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bridge.db import open_database
from bridge.inbox import Inbox
from bridge.store import ResourceStore
from tests.ingest_support import acks_from, mllp_file, variants

ROOT = Path(__file__).resolve().parents[2]
SENDERS, PER_SENDER = 4, 60


def start_server(tmp_path: Path, database_url: str) -> tuple[subprocess.Popen, int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "adapters.mllp", "--data-dir", str(tmp_path / "data"), "--database-url", database_url,
         "--port", "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    line = proc.stdout.readline().decode()
    if not line.startswith("listening on"):
        proc.kill()
        raise AssertionError(f"the server did not start: {line!r} {proc.stderr.read().decode()[-2000:]}")
    return proc, int(line.rsplit(":", 1)[1])


def inbox_rows(database_url: str) -> int:
    db = open_database(database_url)
    try:
        return sum(Inbox(db).counts().values())
    except Exception:
        return 0
    finally:
        db.close()


def test_sigkill_mid_stream_loses_no_acknowledged_message(mllp_send: str, database_url: str, corpus: Path,
                                                          tmp_path: Path) -> None:
    template = (corpus / "hl7v2/microsoft-FHIR-Converter/ADT-A01-02.hl7").read_bytes()
    files = [mllp_file(tmp_path / f"s{s}.mllp", variants(template, PER_SENDER, f"K{s}")) for s in range(SENDERS)]
    server, port = start_server(tmp_path, database_url)
    senders = [subprocess.Popen([mllp_send, "-p", str(port), "-f", str(f), "127.0.0.1"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL) for f in files]
    deadline = time.monotonic() + 60
    while inbox_rows(database_url) < SENDERS * PER_SENDER // 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    server.send_signal(signal.SIGKILL)  # mid-stream: the senders are still sending
    server.wait(10)
    acked = [a for s in senders for a in acks_from(s.communicate(timeout=30)[0])]
    finished = [s.returncode == 0 for s in senders]
    assert acked, "no message was acknowledged before the kill"
    assert not all(finished), "the kill came after every sender had finished: not mid-stream"
    assert all(code == "AA" for code, _ in acked)
    acked_ids = {control for _, control in acked}

    server, port = start_server(tmp_path, database_url)  # restart: finishes what was kept but not converted
    try:
        db = open_database(database_url)
        inbox, store = Inbox(db), ResourceStore(db)
        by_control = {m.control_id: m for m in inbox.list()}
        for control in acked_ids:
            message = by_control[control]
            assert message.status == "stored", (control, message.status)
            for ref in message.versions:
                kind, rid, _, version = ref.split("/")
                assert store.read(kind, rid, int(version)) is not None, ref
        for s in senders:  # everything again, now to the end
            s_out = subprocess.run([mllp_send, "-p", str(port), "-f", str(files[senders.index(s)]), "127.0.0.1"],
                                   capture_output=True, timeout=120)
            assert [code for code, _ in acks_from(s_out.stdout)] == ["AA"] * PER_SENDER
        messages = inbox.list()
        assert len(messages) == SENDERS * PER_SENDER == len({m.control_id for m in messages})
        assert {m.status for m in messages} == {"stored"}
        for m in messages:  # what was acknowledged before the kill kept its versions: nothing redone
            if m.control_id in acked_ids:
                assert m.versions == by_control[m.control_id].versions
        versions = store.count()
        subprocess.run([mllp_send, "-p", str(port), "-f", str(files[0]), "127.0.0.1"], capture_output=True, timeout=120)
        assert len(inbox.list()) == len(messages) and store.count() == versions  # no duplicates
        print(json.dumps({"acknowledged_before_kill": len(acked_ids), "kept_before_kill": len(by_control),
                          "messages": len(messages), "versions": store.count()}))
        db.close()
    finally:
        server.terminate()
        server.wait(15)
