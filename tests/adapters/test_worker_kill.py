"""A conversion worker process killed (SIGKILL) while `mllp_send` clients stream messages into the
two-stage ingestor: the group it held is converted in the listener's process instead, the worker
is replaced, and every message is answered AA and stored once, as if nothing had happened."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from adapters.mllp.ingestor import Ingestor
from adapters.mllp.server import MllpServer, MllpThread
from bridge.inbox import Inbox
from tests.ingest_support import acks_from, mllp_file, open_pipeline, variants

SENDERS, PER_SENDER = 4, 50


def test_a_conversion_worker_killed_mid_stream_costs_no_message(mllp_send: str, database_url: str, corpus: Path,
                                                                 tmp_path: Path, caplog) -> None:
    template = (corpus / "hl7v2/microsoft-FHIR-Converter/ADT-A01-02.hl7").read_bytes()
    files = [mllp_file(tmp_path / f"s{s}.mllp", variants(template, PER_SENDER, f"W{s}")) for s in range(SENDERS)]
    with open_pipeline(database_url, workers=2) as (pipeline, _):
        pool = pipeline.prepare_many
        ingestor = Ingestor.pipelined(pipeline, 64).start()
        thread = MllpThread(MllpServer(ingestor, "127.0.0.1", 0, idle_timeout=30)).start()
        try:
            senders = [subprocess.Popen([mllp_send, "-p", str(thread.server.port), "-f", str(f), "127.0.0.1"],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) for f in files]
            deadline = time.monotonic() + 60
            while ingestor.messages < SENDERS * PER_SENDER // 4 and time.monotonic() < deadline:
                time.sleep(0.005)
            victim, at_kill = pool._all[0], ingestor.messages
            victim.process.kill()  # mid-stream: it may hold a group, or be idle and found dead at the next
            victim.process.join(5)
            acked = [a for s in senders for a in acks_from(s.communicate(timeout=120)[0])]
        finally:
            thread.stop()
            ingestor.stop()
        assert 0 < at_kill < SENDERS * PER_SENDER, "the kill came mid-stream"
        assert "converting in this process" in caplog.text  # the group it held, or the next it was sent
        assert len(acked) == SENDERS * PER_SENDER and {code for code, _ in acked} == {"AA"}
        assert len({control for _, control in acked}) == SENDERS * PER_SENDER
        counts = Inbox(pipeline.db).counts()
        assert counts == {"stored": SENDERS * PER_SENDER}, counts
        assert victim not in pool._all and len(pool.pids) == 2  # replaced
        assert all(w.process.is_alive() for w in pool._all)
