"""What storing an ingested message writes to SQLite: WAL frames (4 KiB pages) a message, by b-tree.

    python3 bench/store_pages.py [--messages 3000] [--group 9]

Every page a transaction changes is written whole to the WAL at commit and again to the database
at a checkpoint, so the pages a message touches drive the storing's CPU (copying, checksums, the
WAL index) and its fsyncs.  The feed messages of ``ingest_bench`` are converted beforehand, then
stored (raw message, versions, search rows, Provenance, log leaves) in groups of ``--group`` (9 is
the mean group of the end-to-end bench with 32 connections); after 1,000 messages of warm-up, the
WAL is emptied, checkpoints are held off, and the frames the rest wrote are counted from the WAL's
frame headers and named by SQLite's ``dbstat`` table.  Unlike a rate, the counts do not depend on
the machine's load; the CPU a message is reported beside them.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anchoring.log import MerkleLog  # noqa: E402
from bridge.db import open_database  # noqa: E402
from bridge.pipeline import Incoming, Pipeline, pipeline_from_config, prepare  # noqa: E402

WAL_HEADER, FRAME_HEADER = 32, 24
WARM_UP = 1000


def wal_pages(wal: bytes) -> Counter:
    """How many frames of a WAL file hold each page number (every frame in the file, committed or
    not: call it on a WAL written since its last reset)."""
    if len(wal) < WAL_HEADER:
        return Counter()
    page_size = struct.unpack(">I", wal[8:12])[0]
    pages: Counter = Counter()
    for at in range(WAL_HEADER, len(wal) - FRAME_HEADER - page_size + 1, FRAME_HEADER + page_size):
        pages[struct.unpack(">I", wal[at : at + 4])[0]] += 1
    return pages


def frames_by_btree(conn, pages: Counter) -> Counter:  # type: ignore[no-untyped-def]
    """The frames of ``pages`` by the table or index owning each page (``dbstat``)."""
    owner = dict(conn.execute("SELECT pageno, name FROM dbstat").fetchall())
    named: Counter = Counter()
    for page, frames in pages.items():
        named[owner.get(page, "(free or overflow)")] += frames
    return named


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--group", type=int, default=9)
    args = parser.parse_args()
    if args.messages <= WARM_UP:
        parser.error(f"--messages must be more than the {WARM_UP} of warm-up")
    from ingest_bench import messages  # beside this script

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.db"
        db = open_database(f"sqlite:///{path}")
        MerkleLog(db, "bench.example/log").ensure_schema()
        convert = pipeline_from_config(db).convert
        sample = messages(args.messages, "S")
        print(f"converting {len(sample)} messages", file=sys.stderr)
        done = {m: prepare(m, convert) for m in sample}
        pipeline = Pipeline(db, convert, prepare_many=lambda raws: [done[r] for r in raws])
        pipeline.ensure_schema()
        conn = db._connection()  # this thread's: the one the pipeline writes with
        for at in range(0, WARM_UP, args.group):
            pipeline.ingest_many([Incoming(m) for m in sample[at : min(at + args.group, WARM_UP)]])
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA wal_autocheckpoint=0")  # every frame written from here stays in the WAL
        measured = len(sample) - WARM_UP
        print(f"storing {measured} messages in groups of {args.group}", file=sys.stderr)
        cpu = time.process_time()
        for at in range(WARM_UP, len(sample), args.group):
            pipeline.ingest_many([Incoming(m) for m in sample[at : at + args.group]])
        cpu_ms = 1000 * (time.process_time() - cpu) / measured
        pages = wal_pages(Path(f"{path}-wal").read_bytes())
        named = frames_by_btree(conn, pages)
        db.close()
    report = {
        "messages": measured, "group": args.group,
        "wal_frames_per_msg": round(sum(pages.values()) / measured, 2),
        "distinct_pages_per_msg": round(len(pages) / measured, 2),
        "cpu_ms_per_msg": round(cpu_ms, 3),
        "frames_per_msg_by_btree": {name: round(n / measured, 2) for name, n in named.most_common()},
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
