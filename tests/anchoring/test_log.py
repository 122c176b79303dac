"""The persistent log on SQLite and on a real PostgreSQL: sequencing, proofs, checkpoints, errors."""

from __future__ import annotations

import random

import pytest

from anchoring import merkle, tiles
from anchoring.checkpoint import open_checkpoint
from anchoring.errors import LogError
from anchoring.log import ENQUEUE_CHUNK, MerkleLog


@pytest.fixture
def log(db):
    log = MerkleLog(db, "test.example/log")
    log.ensure_schema()
    return log


def entries(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randint(1, 40)) for _ in range(n)]


def test_empty_log(log):
    assert log.state() == (0, merkle.EMPTY_ROOT)
    with pytest.raises(LogError, match="outside a tree of size 0"):
        log.inclusion_proof(0)


def test_batches_give_the_reference_root_and_verifiable_proofs(log):
    data = entries(700)
    hashes = [merkle.leaf_hash(d) for d in data]
    at = 0
    for step in (1, 1, 3, 250, 1, 256, 188):
        first, size = log.append(data[at : at + step])
        assert (first, size) == (at, at + step)
        at += step
        assert log.state() == (at, merkle.root_from_leaf_hashes(hashes[:at]))
    for index, size in [(0, 1), (5, 6), (255, 256), (256, 257), (699, 700), (3, 700), (511, 600)]:
        _, proof = log.inclusion_proof(index, size)
        merkle.verify_inclusion(index, size, hashes[index], proof, merkle.root_from_leaf_hashes(hashes[:size]))
    for size1, size2 in [(1, 700), (256, 700), (257, 511), (699, 700), (7, 8)]:
        _, proof = log.consistency_proof(size1, size2)
        merkle.verify_consistency(
            size1, size2, merkle.root_from_leaf_hashes(hashes[:size1]), merkle.root_from_leaf_hashes(hashes[:size2]), proof
        )
    assert log.entry(256) == data[256]
    assert log.leaf_hash(300) == hashes[300]


def test_queued_entries_are_sequenced_in_order(log, db):
    data = entries(30, seed=2)
    with db.transaction(write=True) as cur:
        for d in data[:20]:
            MerkleLog.enqueue(cur, d)
    with pytest.raises(RuntimeError):  # a writer's rolled-back transaction leaves nothing queued
        with db.transaction(write=True) as cur:
            MerkleLog.enqueue(cur, b"rolled back")
            raise RuntimeError("abort")
    with db.transaction(write=True) as cur:
        for d in data[20:]:
            MerkleLog.enqueue(cur, d)
    assert log.queued() == 30
    assert log.sequence(max_batch=7) == 7
    while log.sequence(max_batch=7):
        pass
    assert log.queued() == 0
    assert [log.entry(i) for i in range(30)] == data
    assert log.state()[1] == merkle.root_from_leaf_hashes([merkle.leaf_hash(d) for d in data])


def test_entries_queued_together_keep_their_order_and_ids(log, db):
    """enqueue_many crosses its chunk size; each returned id names its own entry, in order."""
    data = entries(2 * ENQUEUE_CHUNK + 3, seed=3)
    with db.transaction(write=True) as cur:
        first = MerkleLog.enqueue(cur, b"before")
        ids = MerkleLog.enqueue_many(cur, data)
        last = MerkleLog.enqueue(cur, b"after")
        assert first < ids[0] and ids == sorted(set(ids)) and ids[-1] < last
        for queue_id, d in zip(ids, data, strict=True):
            cur.execute("SELECT data FROM log_queue WHERE id = ?", (queue_id,))
            assert bytes(cur.fetchone()[0]) == d
    while log.sequence():
        pass
    assert [log.index_of_queued(i) for i in ids] == list(range(1, len(data) + 1))
    assert [log.entry(i) for i in range(1, len(data) + 1)] == data


def test_proofs_read_one_tile_per_tile_level_and_never_rehash(db):
    log = MerkleLog(db, "test.example/log")
    log.ensure_schema()
    for _ in range(5):
        log.append(entries(1000, seed=3))
    fresh = MerkleLog(db, "test.example/log")  # empty tile cache
    loads = []
    real = fresh._load_tile
    fresh._load_tile = lambda cur, tile_id: loads.append(tile_id) or real(cur, tile_id)
    calls = []
    real_hash = merkle.node_hash
    try:
        merkle.node_hash = lambda a, b: calls.append(1) or real_hash(a, b)
        fresh.inclusion_proof(4321, 5000)
    finally:
        merkle.node_hash = real_hash
    levels = (5000 - 1).bit_length()
    assert len(set(loads)) == len(loads), "no tile is read twice for one proof"
    assert len(loads) <= levels // tiles.TILE_HEIGHT + 2
    assert len(calls) <= levels, "only the right edge's few nodes are combined"


def test_checkpoints_are_signed_once_per_size_and_verify(log, signer):
    with pytest.raises(LogError):
        log.root_at(1)
    log.append([b"a", b"b", b"c"])
    first = log.checkpoint(signer)
    assert log.checkpoint(signer) == first, "no new checkpoint while the log has not grown"
    log.append([b"d"])
    second = log.checkpoint(signer)
    assert [c.checkpoint.size for c in log.checkpoints()] == [3, 4]
    for stored in (first, second):
        opened = open_checkpoint(stored.note, [signer.verifier])
        assert opened.root == log.root_at(opened.size)
    past = log.sign_at(2, signer)
    assert open_checkpoint(past.note, [signer.verifier]).root == log.root_at(2)
    assert log.stored_checkpoint(2) is None, "a past-size checkpoint is not stored"


def test_a_database_keeps_one_origin(db):
    MerkleLog(db, "first.example/log").ensure_schema()
    with pytest.raises(LogError, match="first.example/log"):
        MerkleLog(db, "second.example/log").ensure_schema()


def test_requests_outside_the_log_are_refused(log):
    log.append(entries(5))
    with pytest.raises(LogError, match="size 6 is outside"):
        log.inclusion_proof(0, 6)
    with pytest.raises(LogError, match="index 5 is outside"):
        log.inclusion_proof(5, 5)
    with pytest.raises(LogError):
        log.consistency_proof(0, 5)
    with pytest.raises(LogError):
        log.consistency_proof(4, 3)
    with pytest.raises(LogError, match="no entry"):
        log.entry(9)


TRIGGER = {
    "sqlite": [
        "CREATE TRIGGER fail_delete BEFORE DELETE ON log_queue BEGIN SELECT RAISE(ABORT, 'injected'); END",
    ],
    "postgresql": [
        "CREATE FUNCTION fail_delete() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'injected'; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER fail_delete BEFORE DELETE ON log_queue FOR EACH ROW EXECUTE FUNCTION fail_delete()",
    ],
}


def test_a_failed_batch_leaves_no_trace(log, db):
    """The database itself refuses the end of a sequencing transaction (a trigger): all of it rolls back."""
    data = entries(300, seed=5)
    log.append(data[:200])
    state = log.state()
    with db.transaction(write=True) as cur:
        for d in data[200:]:
            MerkleLog.enqueue(cur, d)
        for statement in TRIGGER[db.dialect]:
            cur.execute(statement)
    with pytest.raises(Exception, match="injected"):
        log.sequence()
    assert log.state() == state
    assert log.queued() == 100
    with db.transaction(write=True) as cur:
        cur.execute("DROP TRIGGER fail_delete" + (" ON log_queue" if db.dialect == "postgresql" else ""))
        cur.execute("DELETE FROM log_queue")
    # Another process (here: another instance, with its own cache) appends other entries where the
    # failed ones were; the first instance must not answer from tiles of its failed batch.
    data[200:] = entries(100, seed=6)
    MerkleLog(db, "test.example/log").append(data[200:])
    expected = merkle.root_from_leaf_hashes([merkle.leaf_hash(e) for e in data])
    assert log.state() == (300, expected)
    for index in (0, 199, 250):
        _, proof = log.inclusion_proof(index)
        merkle.verify_inclusion(index, 300, merkle.leaf_hash(data[index]), proof, expected)
