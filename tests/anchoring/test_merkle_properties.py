"""Property tests (Hypothesis): proofs served by the persistent log verify, and any flipped bit fails."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anchoring import merkle
from anchoring.db import SqliteDatabase
from anchoring.errors import VerificationError
from anchoring.log import MerkleLog
from bridge.db import open_database

N = 2100  # past 2048, so the tree has an imperfect right edge over several tile levels


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def built(request, tmp_path_factory):
    rng = random.Random(7)
    if request.param == "sqlite":
        db = SqliteDatabase(tmp_path_factory.mktemp("prop") / "log.db", synchronous="OFF")
    else:
        db = open_database(request.getfixturevalue("postgres_server").create_database())
    log = MerkleLog(db, "prop.example/log")
    log.ensure_schema()
    entries = [rng.randbytes(rng.randint(0, 64)) for _ in range(N)]
    at = 0
    while at < N:  # uneven batches exercise partial tiles being extended
        step = rng.choice([1, 2, 5, 31, 255, 256, 257, 700])
        log.append(entries[at : at + step])
        at += step
    hashes = [merkle.leaf_hash(e) for e in entries]
    roots = {}

    def root(size: int) -> bytes:
        if size not in roots:
            roots[size] = merkle.root_from_leaf_hashes(hashes[:size])
        return roots[size]

    yield log, hashes, root
    db.close()


def flip(value: bytes, bit: int) -> bytes:
    data = bytearray(value)
    data[(bit // 8) % len(data)] ^= 1 << (bit % 8)
    return bytes(data)


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(st.data())
def test_inclusion_proofs_verify_and_any_flipped_bit_fails(built, data):
    log, hashes, root = built
    size = data.draw(st.integers(1, N), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    got_size, proof = log.inclusion_proof(index, size)
    assert got_size == size
    merkle.verify_inclusion(index, size, hashes[index], proof, root(size))

    bit = data.draw(st.integers(0, 255), label="bit")
    with pytest.raises(VerificationError):
        merkle.verify_inclusion(index, size, flip(hashes[index], bit), proof, root(size))
    with pytest.raises(VerificationError):
        merkle.verify_inclusion(index, size, hashes[index], proof, flip(root(size), bit))
    if proof:
        at = data.draw(st.integers(0, len(proof) - 1), label="proof hash")
        bad = list(proof)
        bad[at] = flip(bad[at], bit)
        with pytest.raises(VerificationError):
            merkle.verify_inclusion(index, size, hashes[index], bad, root(size))
        with pytest.raises(VerificationError):  # a hash missing
            merkle.verify_inclusion(index, size, hashes[index], proof[:-1], root(size))
    with pytest.raises(VerificationError):  # a hash too many
        merkle.verify_inclusion(index, size, hashes[index], [*proof, hashes[0]], root(size))


@SETTINGS
@given(st.data())
def test_consistency_proofs_verify_and_any_flipped_bit_fails(built, data):
    log, _, root = built
    size2 = data.draw(st.integers(2, N), label="size2")
    size1 = data.draw(st.integers(1, size2 - 1), label="size1")
    _, proof = log.consistency_proof(size1, size2)
    merkle.verify_consistency(size1, size2, root(size1), root(size2), proof)

    bit = data.draw(st.integers(0, 255), label="bit")
    with pytest.raises(VerificationError):
        merkle.verify_consistency(size1, size2, flip(root(size1), bit), root(size2), proof)
    with pytest.raises(VerificationError):
        merkle.verify_consistency(size1, size2, root(size1), flip(root(size2), bit), proof)
    at = data.draw(st.integers(0, len(proof) - 1), label="proof hash")
    bad = list(proof)
    bad[at] = flip(bad[at], bit)
    with pytest.raises(VerificationError):
        merkle.verify_consistency(size1, size2, root(size1), root(size2), bad)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, N))
def test_stored_roots_equal_the_reference_root(built, size):
    log, _, root = built
    assert log.root_at(size) == (root(size) if size else merkle.EMPTY_ROOT)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 1 << 40), st.data())
def test_bottom_up_inclusion_walk_equals_rfc_path(size, data):
    """The log's fast proof plan and RFC 9162's recursive PATH pick the same nodes, at any size."""
    index = data.draw(st.integers(0, size - 1))
    assert merkle.inclusion_nodes(index, size) == merkle.nodes_for_ranges(merkle.inclusion_ranges(index, size))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 1 << 40), st.integers(1, 1 << 40))
def test_perfect_nodes_tile_the_range_exactly(begin, length):
    end = begin + length
    nodes = merkle.perfect_nodes(begin, end)
    at = begin
    for level, index in nodes:
        assert index << level == at, "nodes are contiguous and aligned"
        at += 1 << level
    assert at == end
