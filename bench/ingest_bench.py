"""End-to-end ingest benchmark: MLLP receive -> commit raw -> convert -> validate -> store -> log.

    python3 bench/ingest_bench.py [--messages 3000] [--connections 32] [--database-url URL]

An ADT^A01 and ORU^R01 mix built from corpus messages is sent by a separate client process over
127.0.0.1 to the real listener (asyncio MLLP server, grouping ingestor, pipeline on SQLite with
synchronous=FULL, or PostgreSQL), each connection waiting for its ACK before sending the next
message.  The log sequencer runs every second as in `serve`.  Each message differs from the next
as a feed's do (``tests.ingest_support.feed_variants``): control id, patient (id, name, birth
date, address, phone, account), times, visit and order numbers and numeric results are its own;
doctors and beds come from pools of 60 and 40.

Reported beside it, measured in the same run: the bare parse rate of the parser used
(`bridge.hl7.parser.parse`) and the convert+validate rate alone, both on one core; a worker's CPU
a message once warm (``prepare`` in this process, with a worker's collector settings, best of 4 x
1,000 messages it has not seen); and the CPU the end-to-end run cost per message in the listening
process, the worker processes (from /proc, so on Linux) and the client: on a shared machine
steadier figures than the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from proc_cpu import cpu_seconds, thread_cpu_seconds  # noqa: E402  (bench/, beside this script)

from adapters.mllp.ingestor import Ingestor  # noqa: E402
from adapters.mllp.server import MllpServer, MllpThread  # noqa: E402
from anchoring.log import MerkleLog  # noqa: E402
from bridge.db import open_database  # noqa: E402
from bridge.heap import settle_heap  # noqa: E402
from bridge.hl7.parser import parse  # noqa: E402
from bridge.pipeline import Incoming, Pipeline, pipeline_from_config, prepare  # noqa: E402
from tests.ingest_support import feed_variants  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus" / "hl7v2" / "microsoft-FHIR-Converter"
TEMPLATES = ("ADT-A01-02.hl7", "ORU-R01-01.hl7")
VT, FS, CR = b"\x0b", b"\x1c", b"\r"


def messages(count: int, tag: str = "B") -> list[bytes]:
    per = count // len(TEMPLATES) + 1
    groups = [feed_variants((CORPUS / name).read_bytes(), per, f"{tag}{i}") for i, name in enumerate(TEMPLATES)]
    mixed = [m for pair in zip(*groups, strict=True) for m in pair]
    return mixed[:count]


class _Sender(asyncio.Protocol):
    """One MLLP connection: sends a message, waits for its ACK, sends the next (as senders do).

    A protocol rather than streams: the load generator shares the two cores with what it measures,
    and a reader/writer pair costs it about twice the CPU a message."""

    def __init__(self, pending: Iterator[bytes], codes: dict[str, int], done: asyncio.Future) -> None:
        self.pending, self.codes, self.done = pending, codes, done
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send_next()

    def _send_next(self) -> None:
        assert self.transport is not None
        message = next(self.pending, None)
        if message is None:
            self.transport.close()
            return
        self.transport.write(VT + message + FS + CR)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(FS + CR)
        if end < 0:
            return
        answer, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
        code = answer.split(b"MSA|", 1)[1][:2].decode() if b"MSA|" in answer else "??"
        self.codes[code] = self.codes.get(code, 0) + 1
        self._send_next()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(exc)


async def _client(port: int, payload: list[bytes], connections: int) -> dict:
    loop = asyncio.get_running_loop()
    pending = iter(payload)  # shared: each connection takes the next message when its ACK is in
    codes: dict[str, int] = {}
    start = time.perf_counter()
    cpu = time.process_time()
    done = [loop.create_future() for _ in range(connections)]
    for future in done:
        await loop.create_connection(lambda f=future: _Sender(pending, codes, f), "127.0.0.1", port)
    errors = [e for e in await asyncio.gather(*done) if e is not None]
    if errors:
        raise errors[0]
    return {"seconds": time.perf_counter() - start, "codes": codes, "cpu_seconds": time.process_time() - cpu}


def client_main(port: int, count: int, connections: int) -> None:
    result = asyncio.run(_client(port, messages(count), connections))
    print(json.dumps(result), flush=True)


def bare_rates(sample: list[bytes], convert) -> dict:  # type: ignore[no-untyped-def]
    """One core, the same run: the parser alone, the converter alone, convert + validate + canonicalise."""
    from bridge import pipeline as pipeline_module

    start = time.perf_counter()
    for m in sample:
        parse(m)
    parse_rate = len(sample) / (time.perf_counter() - start)
    start = time.perf_counter()
    for m in sample:
        convert(m)
    convert_rate = len(sample) / (time.perf_counter() - start)
    pipeline_module.forget_checked()
    start = time.perf_counter()
    resources = 0
    for m in sample:
        resources += len(prepare(m, convert).resources)
    prepare_rate = len(sample) / (time.perf_counter() - start)
    pipeline_module.forget_checked()  # the end-to-end run starts cold, like a fresh process
    return {"parse_msgs_per_s": round(parse_rate), "convert_msgs_per_s": round(convert_rate),
            "convert_validate_canonical_msgs_per_s": round(prepare_rate),
            "resources_per_msg": round(resources / len(sample), 2)}


def warm_prepare_cost(convert, rounds: int = 4, per_round: int = 1000) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """A conversion worker's CPU a message once warm (ms): ``prepare`` in this process after 2,000
    messages, then the best and the mean of ``rounds`` x ``per_round`` messages it has not seen.
    One thread on one core, so steadier on a shared machine than the end-to-end rate; the best
    is the steadiest figure, the mean the one to hold against the end-to-end run's."""
    from bridge import pipeline as pipeline_module

    pipeline_module.forget_checked()
    for m in messages(2000, "V"):
        prepare(m, convert)
    fresh = [messages(per_round, f"P{n}") for n in range(rounds)]
    settle_heap()  # as a worker runs
    spent = []
    for batch in fresh:
        cpu = time.process_time()
        for m in batch:
            prepare(m, convert)
        spent.append(time.process_time() - cpu)
    pipeline_module.forget_checked()  # the end-to-end run starts cold, like a fresh process
    return round(1000 * min(spent) / per_round, 3), round(1000 * sum(spent) / len(spent) / per_round, 3)


def storage_rate(sample: list[bytes], convert, url: str, group: int) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    """Keep raw + store versions + Provenance + queue leaves, groups of ``group``, with conversion and
    validation done beforehand: what the storage side alone sustains (no MLLP), and its CPU a
    message (ms) in this process."""
    done = {m: prepare(m, convert) for m in sample}
    db = open_database(url)
    MerkleLog(db, "bench.example/log").ensure_schema()
    pipeline = Pipeline(db, convert, prepare_many=lambda raws: [done[r] for r in raws])
    pipeline.ensure_schema()
    start, cpu = time.perf_counter(), time.process_time()
    for at in range(0, len(sample), group):
        pipeline.ingest_many([Incoming(m) for m in sample[at : at + group]])
    rate = len(sample) / (time.perf_counter() - start)
    cpu_ms = 1000 * (time.process_time() - cpu) / len(sample)
    db.close()
    return round(rate), round(cpu_ms, 3)


def _worker_pids(pipeline: Pipeline) -> list[int]:
    return getattr(pipeline.prepare_many, "pids", [])  # a PreparePool's; none when converting in-process


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--group", type=int, default=64, help="messages per group commit (ingest_group)")
    parser.add_argument("--workers", type=int, default=2, help="conversion worker processes (ingest_workers)")
    parser.add_argument("--database-url", help="default: SQLite (WAL, synchronous=FULL) in a temporary folder")
    parser.add_argument("--preconverted", action="store_true",
                        help="run the converter on every message before the clock starts, to measure the rest "
                             "(MLLP, commits, validation, store, log) without it")
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args.client, args.messages, args.connections)
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        db = open_database(url)
        log = MerkleLog(db, "bench.example/log")
        log.ensure_schema()
        sample = messages(min(args.messages, 500), "W")  # not the messages sent below
        convert = pipeline_from_config(db).convert
        bare = bare_rates(sample, convert)
        bare["prepare_warm_ms_per_msg"], bare["prepare_warm_mean_ms_per_msg"] = warm_prepare_cost(convert)
        if not args.database_url:
            bare["store_log_msgs_per_s"], bare["store_log_cpu_ms_per_msg"] = storage_rate(
                sample, convert, f"sqlite:///{tmp}/storage.db", args.group)
        from bridge import pipeline as pipeline_module

        pipeline_module.forget_checked()
        if args.preconverted:
            real = convert
            converted = {m: real(m) for m in messages(args.messages)}
            pipeline = Pipeline(db, converted.__getitem__)
            args.workers = 0
        else:
            pipeline = pipeline_from_config(db, None, args.workers)
        if args.workers:
            pipeline.prepare_many(sample[:4])  # start the workers before the clock runs

        ingestor = Ingestor.pipelined(pipeline, args.group).start()  # as `serve` runs it
        thread = MllpThread(MllpServer(ingestor, "127.0.0.1", 0)).start()
        stop = threading.Event()

        def sequencer() -> None:
            while not stop.wait(1.0):
                while log.sequence():
                    pass

        seq = threading.Thread(target=sequencer, name="sequencer", daemon=True)
        seq.start()
        settle_heap()  # as `serve` does once started
        workers_before = {pid: cpu_seconds(pid) for pid in _worker_pids(pipeline)}
        main_before = time.process_time()
        threads_before = thread_cpu_seconds()
        client = subprocess.run(
            [sys.executable, __file__, "--client", str(thread.server.port), "--messages", str(args.messages),
             "--connections", str(args.connections)],
            capture_output=True, check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        result = json.loads(client.stdout)
        main_cpu = time.process_time() - main_before  # listener, ingest threads, sequencer: not the client
        threads_cpu = {name: cpu - threads_before.get(name, 0.0) for name, cpu in thread_cpu_seconds().items()}
        workers_cpu = sum((cpu_seconds(pid) or 0.0) - (before or 0.0) for pid, before in workers_before.items())
        stop.set()
        seq.join()
        thread.stop()
        ingestor.stop()
        pipeline.close()
        while log.sequence():
            pass
        counts = pipeline.inbox.counts()
        report = {
            "database": url.split(":", 1)[0],
            "messages": args.messages,
            "connections": args.connections,
            "group": args.group,
            "workers": args.workers,
            "preconverted": args.preconverted,
            "end_to_end_msgs_per_s": round(args.messages / result["seconds"]),
            "cpu_ms_per_msg": {"main_process": round(1000 * main_cpu / args.messages, 3),
                               "workers": round(1000 * workers_cpu / args.messages, 3),
                               "client": round(1000 * result["cpu_seconds"] / args.messages, 3)},
            # the main process by thread: mllp (listener), ingest-0 (forms groups, hands them to the
            # workers), ingest-1 (stores), sequencer (the log); /proc ticks, so 10 ms steps
            "main_threads_cpu_ms_per_msg": {name: round(1000 * cpu / args.messages, 3)
                                            for name, cpu in sorted(threads_cpu.items()) if cpu > 0},
            "seconds": round(result["seconds"], 2),
            "ack_codes": result["codes"],
            "mean_group": round(ingestor.messages / max(ingestor.groups, 1), 1),
            "inbox": counts,
            "versions": pipeline.store.count(),
            "log_size": log.size(),
            **bare,
            "cpus": os.cpu_count(),
        }
        print(json.dumps(report, indent=2))
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
