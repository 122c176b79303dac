"""A process killed while appending leaves a log whose stored checkpoints all still verify and whose
size never goes backwards.

A child process (``crash_child.py``) appends batches of random size to a :class:`MerkleLog` and signs
checkpoints, reporting each commit on stdout as soon as it is made; it is killed with SIGKILL at a
random moment, restarted on the same database, killed again, several times.  After every kill the
log is reopened in a fresh connection and checked from what is stored: nothing reported as committed
is missing, batches are whole, every stored checkpoint opens with the verifier key and is a prefix of
the current tree, and the current root is the hash of the stored entries.  On SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from anchoring.checkpoint import open_checkpoint
from anchoring.log import MerkleLog
from anchoring.merkle import EMPTY_ROOT, leaf_hash, root_from_leaf_hashes, verify_consistency, verify_inclusion
from anchoring.note import Signer, Verifier, write_key_file
from bridge.db import open_database

CHILD = Path(__file__).with_name("crash_child.py")
PROJECT = Path(__file__).resolve().parents[2]
ORIGIN = "crash.example/log"
ROUNDS = 8
TIME_BUDGET = 10.0  # seconds per database for all rounds; at least MIN_ROUNDS run regardless
MIN_ROUNDS = 3
KILL_AFTER = (0.02, 0.25)  # seconds after the child is ready
INCLUSION_SAMPLES = 16
START_TIMEOUT = 30.0  # seconds for the child to open the log


@dataclass
class Observed:
    """What earlier rounds established and later rounds must not contradict."""

    size: int = 0
    checkpoint_roots: dict[int, bytes] = field(default_factory=dict)
    rounds: int = 0


def start_child(url: str, key_file: Path, seed: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), url, str(key_file), ORIGIN, str(seed)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    first = proc.stdout.readline() if ready else b"(no output in time)"
    if first != b"ready\n":
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"the appending child did not start: {first!r} {err.decode(errors='replace')}")
    return proc


def kill_child(proc: subprocess.Popen[bytes], delay: float) -> tuple[int, list[int]]:
    """SIGKILL the child after ``delay`` s; return the largest size and the checkpoints it reported."""
    time.sleep(delay)
    if proc.poll() is not None:
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"the appending child stopped by itself (exit {proc.returncode}): {err.decode(errors='replace')}")
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    size, checkpoints = 0, []
    for line in out.decode().splitlines():
        kind, _, value = line.partition(" ")
        if kind == "size":
            assert int(value) > size, f"the child reported size {value} after size {size}"
            size = int(value)
        elif kind == "checkpoint":
            checkpoints.append(int(value))
        elif line:  # a line cut short by the kill is impossible: each is one small write
            pytest.fail(f"unexpected output from the child: {line!r}")
    return size, checkpoints


def check_log(url: str, verifier: Verifier, reported_size: int, reported_checkpoints: list[int],
              seen: Observed, rng: random.Random) -> None:
    """Reopen the log after a kill and check everything stored against what was reported and seen."""
    db = open_database(url)
    try:
        log = MerkleLog(db, ORIGIN)  # a fresh instance: no cache from the writer
        size, root = log.state()
        assert size >= reported_size, f"the child reported size {reported_size} committed, the log has {size}"
        assert size >= seen.size, f"the log shrank from {seen.size} to {size}"

        # Every stored entry, in whole batches, and the root is their hash.
        leaves = []
        batch_start = batch_count = 0
        for index in range(size):
            data = log.entry(index)
            start, count, position = (int(x) for x in data.split(b" ", 3)[:3])
            if index == batch_start + batch_count:  # a new batch begins here
                batch_start, batch_count = index, count
            assert (start, count, position) == (batch_start, batch_count, index - batch_start), (
                f"entry {index} is {data[:30]!r}: expected position {index - batch_start} of the batch "
                f"of {batch_count} starting at {batch_start}"
            )
            leaves.append(leaf_hash(data))
        assert size == batch_start + batch_count, f"the last batch, at {batch_start}, is cut short at size {size}"
        assert root_from_leaf_hashes(leaves) == root
        assert log.root_at(size) == root

        # Inclusion proofs from the stored nodes still lead to the root.
        for index in rng.sample(range(size), min(size, INCLUSION_SAMPLES)):
            proof_size, proof = log.inclusion_proof(index, size)
            assert proof_size == size
            verify_inclusion(index, size, leaves[index], proof, root)

        # Every stored checkpoint: signed by the key, at a stored root, a prefix of the current tree.
        stored = log.checkpoints()
        sizes = [s.checkpoint.size for s in stored]
        assert sizes == sorted(set(sizes)) and (not sizes or sizes[-1] <= size)
        missing = set(reported_checkpoints) - set(sizes)
        assert not missing, f"checkpoints reported as stored are missing: sizes {sorted(missing)}"
        lost = set(seen.checkpoint_roots) - set(sizes)
        assert not lost, f"checkpoints stored before this kill are gone: sizes {sorted(lost)}"
        for s in stored:
            checkpoint = open_checkpoint(s.note, [verifier])
            assert checkpoint == s.checkpoint
            assert checkpoint.root == log.root_at(checkpoint.size)
            assert seen.checkpoint_roots.setdefault(checkpoint.size, checkpoint.root) == checkpoint.root
            if checkpoint.size == 0:
                assert checkpoint.root == EMPTY_ROOT
                continue
            new_size, proof = log.consistency_proof(checkpoint.size, size)
            assert new_size == size
            verify_consistency(checkpoint.size, size, checkpoint.root, root, proof)
        if stored:  # the latest checkpoint, also straight from the entries
            latest = stored[-1].checkpoint
            assert latest.root == root_from_leaf_hashes(leaves[: latest.size])
        seen.size = size
    finally:
        db.close()


def test_killed_appender_leaves_a_verifiable_log(database_url: str, tmp_path: Path) -> None:
    signer = Signer.generate(ORIGIN)
    key_file = tmp_path / "log-signing.key"
    write_key_file(key_file, signer)
    rng = random.Random()
    seed = rng.randrange(1 << 32)
    rng.seed(seed)
    seen = Observed()
    sizes = []
    deadline = time.monotonic() + TIME_BUDGET
    for round_number in range(ROUNDS):
        if round_number >= MIN_ROUNDS and time.monotonic() > deadline:
            break
        proc = start_child(database_url, key_file, rng.randrange(1 << 32))
        try:
            reported_size, reported_checkpoints = kill_child(proc, rng.uniform(*KILL_AFTER))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        try:
            check_log(database_url, signer.verifier, reported_size, reported_checkpoints, seen, rng)
        except AssertionError as exc:
            raise AssertionError(f"round {round_number} (random seed {seed}): {exc}") from exc
        sizes.append(seen.size)
        seen.rounds += 1
    assert seen.rounds >= MIN_ROUNDS
    # Every restart could write again: the log grew after the first kill, and checkpoints were stored.
    assert sizes[-1] > sizes[0], f"sizes after each kill: {sizes}"
    assert seen.checkpoint_roots, "no checkpoint was ever stored"
