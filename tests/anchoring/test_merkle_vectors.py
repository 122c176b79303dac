"""RFC 6962 / RFC 9162 vectors and verifier probe cases written by others (../shared/corpus/merkle)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from anchoring import merkle
from anchoring.errors import VerificationError

from ..conftest import CORPUS

VECTORS = json.loads((CORPUS / "merkle" / "rfc6962_vectors.json").read_text()) if CORPUS.is_dir() else {}
PROBES = CORPUS / "merkle" / "upstream-testdata"


def h(x: str | None) -> bytes:
    return bytes.fromhex(x) if x is not None else b""


def leaf_hashes() -> list[bytes]:
    return [merkle.leaf_hash(h(leaf)) for leaf in VECTORS["leaves"]]


def stored_nodes(hashes: list[bytes]):
    """A node lookup over a list of leaf hashes, as a stored log would answer it."""

    def node(n: merkle.NodeId) -> bytes:
        level, index = n
        return merkle.root_from_leaf_hashes(hashes[index << level : (index + 1) << level])

    return node


def test_hasher_vectors():
    for case in VECTORS["hasher_vectors"]:
        if case["op"] == "empty_root":
            got = merkle.EMPTY_ROOT
        elif case["op"] == "leaf":
            got = merkle.leaf_hash(h(case["input_hex"]))
        else:
            got = merkle.node_hash(h(case["left_hex"]), h(case["right_hex"]))
        assert got.hex() == case["expected"], case["desc"]


def test_leaf_hashes_match_corpus():
    assert [x.hex() for x in leaf_hashes()] == VECTORS["leaf_hashes"]


@pytest.mark.parametrize("size", range(9))
def test_roots_for_sizes_0_to_8(size):
    hashes = leaf_hashes()[:size]
    expected = VECTORS["roots_by_tree_size"][str(size)]
    assert merkle.root_from_leaf_hashes(hashes).hex() == expected
    # The same root from the perfect-node decomposition the persistent log uses.
    if size:
        nodes = stored_nodes(hashes)
        assert merkle.fold([nodes(n) for n in merkle.root_ranges(size)]).hex() == expected


def test_node_hashes_by_level():
    nodes = stored_nodes(leaf_hashes())
    for level, row in enumerate(VECTORS["node_hashes_by_level"]["levels"]):
        assert [nodes((level, j)).hex() for j in range(len(row))] == row


def _inclusion_vectors():
    upstream = [v for v in VECTORS.get("inclusion_proofs", {}).get("vectors", []) if v.get("expect") != "error"]
    return upstream + VECTORS.get("derived", {}).get("inclusion_all", [])


def _consistency_vectors():
    return VECTORS.get("consistency_proofs", {}).get("vectors", []) + VECTORS.get("derived", {}).get("consistency_all", [])


@pytest.mark.parametrize("vector", _inclusion_vectors(), ids=lambda v: f"{v['leaf_index']}-of-{v['tree_size']}")
def test_inclusion_vectors(vector):
    index, size = vector["leaf_index"], vector["tree_size"]
    root = bytes.fromhex(vector.get("root") or VECTORS["roots_by_tree_size"][str(size)])
    proof = [h(x) for x in vector["audit_path"]]
    # Generated proofs equal the vector, both the RFC-literal ranges and the log's bottom-up walk.
    nodes = stored_nodes(leaf_hashes()[:size])
    assert merkle.hashes_for_ranges(merkle.inclusion_ranges(index, size), nodes) == proof
    assert [merkle.fold([nodes(n) for n in g]) for g in merkle.inclusion_nodes(index, size)] == proof
    merkle.verify_inclusion(index, size, h(vector["leaf_hash"]), proof, root)


def test_inclusion_vector_for_empty_tree_is_an_error():
    bad = [v for v in VECTORS["inclusion_proofs"]["vectors"] if v.get("expect") == "error"]
    assert bad
    for v in bad:
        with pytest.raises(VerificationError):
            merkle.verify_inclusion(0, v["tree_size"], merkle.leaf_hash(b""), [], merkle.EMPTY_ROOT)


@pytest.mark.parametrize("vector", _consistency_vectors(), ids=lambda v: f"{v['size1']}-to-{v['size2']}")
def test_consistency_vectors(vector):
    size1, size2 = vector["size1"], vector["size2"]
    root1 = bytes.fromhex(vector.get("root1") or VECTORS["roots_by_tree_size"][str(size1)])
    root2 = bytes.fromhex(vector.get("root2") or VECTORS["roots_by_tree_size"][str(size2)])
    proof = [h(x) for x in vector["proof"]]
    nodes = stored_nodes(leaf_hashes()[:size2])
    assert merkle.hashes_for_ranges(merkle.consistency_ranges(size1, size2), nodes) == proof
    merkle.verify_consistency(size1, size2, root1, root2, proof)


def _probe_files(kind: str) -> list[Path]:
    return sorted((PROBES / kind).rglob("*.json")) if PROBES.is_dir() else []


def _b64(x):
    return b"" if x is None else base64.b64decode(x)


def test_probe_corpus_is_complete():
    assert len(_probe_files("inclusion")) + len(_probe_files("consistency")) == 196


@pytest.mark.parametrize("path", _probe_files("inclusion"), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_inclusion_probe(path):
    case = json.loads(path.read_text())
    args = (case["leafIdx"], case["treeSize"], _b64(case["leafHash"]), [_b64(p) for p in case["proof"] or []], _b64(case["root"]))
    if case["wantErr"]:
        with pytest.raises(VerificationError):
            merkle.verify_inclusion(*args)
    else:
        merkle.verify_inclusion(*args)


@pytest.mark.parametrize("path", _probe_files("consistency"), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_consistency_probe(path):
    case = json.loads(path.read_text())
    args = (case["size1"], case["size2"], _b64(case["root1"]), _b64(case["root2"]), [_b64(p) for p in case["proof"] or []])
    if case["wantErr"]:
        with pytest.raises(VerificationError):
            merkle.verify_consistency(*args)
    else:
        merkle.verify_consistency(*args)
