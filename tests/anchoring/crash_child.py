"""Child process for test_crash.py: appends to a log and signs checkpoints until it is killed.

    python crash_child.py DATABASE_URL KEY_FILE ORIGIN SEED

Prints ``ready`` once the log is open, then after every committed write one line, flushed at once:
``size N`` after a batch of entries is committed, ``checkpoint N`` after a checkpoint of size N is
stored.  Each entry starts with ``<first index of its batch> <batch length> <position in batch> ``,
so the parent can tell a whole batch from part of one.  Exits 3 if the log is not where it left it.
"""

from __future__ import annotations

import random
import sys

from anchoring.log import MerkleLog
from anchoring.note import read_key_file
from bridge.db import open_database


def main(url: str, key_file: str, origin: str, seed: str) -> int:
    signer = read_key_file(key_file)
    log = MerkleLog(open_database(url), origin)
    log.ensure_schema()
    rng = random.Random(int(seed))
    print("ready", flush=True)
    while True:
        size = log.size()
        count = rng.randint(1, 12)
        batch = [f"{size} {count} {i} ".encode() + rng.randbytes(rng.randint(0, 48)) for i in range(count)]
        first, new_size = log.append(batch)
        if (first, new_size) != (size, size + count):
            print(f"expected to append at {size}, appended at {first}", file=sys.stderr, flush=True)
            return 3
        print(f"size {new_size}", flush=True)
        if rng.random() < 0.35:
            stored = log.checkpoint(signer)
            print(f"checkpoint {stored.checkpoint.size}", flush=True)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
