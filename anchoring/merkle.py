"""RFC 9162 (RFC 6962) Merkle tree hashing, proof planning and verification: pure functions.

Vocabulary follows RFC 9162 section 2.1: a tree of ``size`` leaves, leaves numbered by a 0-based
``index``, ranges half-open ``[begin, end)``.  A *perfect node* ``(level, index)`` is the root of
the complete subtree over leaves ``[index * 2**level, (index + 1) * 2**level)``; every hash a proof
needs is either one such node or the hash of a range built from a few of them, so the persistent
log only has to store perfect nodes (see :mod:`anchoring.tiles`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from hashlib import sha256

from .errors import VerificationError

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = sha256(b"").digest()

NodeId = tuple[int, int]  # (level, index) of a perfect node


def leaf_hash(leaf_data: bytes) -> bytes:
    """MTH of a one-leaf tree: SHA-256(0x00 || leaf_data)."""
    return sha256(LEAF_PREFIX + leaf_data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash of an interior node: SHA-256(0x01 || left || right)."""
    return sha256(NODE_PREFIX + left + right).digest()


def largest_power_of_two_below(n: int) -> int:
    """The split point k of RFC 9162: the largest power of two strictly smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def perfect_nodes(begin: int, end: int) -> list[NodeId]:
    """Decompose ``[begin, end)`` into maximal aligned perfect subtrees, left to right.

    For a range that is a subtree of an RFC 9162 tree (every range a proof uses), the subtrees come
    out in decreasing size and the range's hash is their right-to-left fold (:func:`fold`).
    """
    n = end - begin
    if n > 0 and n & (n - 1) == 0 and begin & (n - 1) == 0:  # the common case: one perfect node
        level = n.bit_length() - 1
        return [(level, begin >> level)]
    nodes = []
    while begin < end:
        level = (end - begin).bit_length() - 1  # largest block that fits ...
        if begin:
            level = min(level, (begin & -begin).bit_length() - 1)  # ... and is aligned at `begin`
        nodes.append((level, begin >> level))
        begin += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """Hash of a subtree range from its perfect subtrees' hashes (left to right), as RFC 9162 splits it."""
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def root_ranges(size: int) -> list[NodeId]:
    """Perfect nodes whose fold is the root of a tree of ``size`` leaves (empty for size 0)."""
    return perfect_nodes(0, size)


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Ranges whose hashes form the inclusion proof PATH(index, D[size]), leaf's sibling first."""
    if not 0 <= index < size:
        raise ValueError(f"index {index} is outside a tree of size {size}")
    ranges = []
    begin, end = 0, size
    while end - begin > 1:
        k = largest_power_of_two_below(end - begin)
        if index < begin + k:
            ranges.append((begin + k, end))
            end = begin + k
        else:
            ranges.append((begin, begin + k))
            begin += k
    ranges.reverse()
    return ranges


def inclusion_nodes(index: int, size: int) -> list[list[NodeId]]:
    """The perfect nodes of each hash of PATH(index, D[size]), leaf's sibling first.

    Same result as ``nodes_for_ranges(inclusion_ranges(index, size))``, walked bottom-up without
    building ranges: at each level the sibling of the leaf's ancestor is a perfect node, or, at the
    right edge of the tree, the fold of the perfect nodes of what is there, or nothing.
    """
    if not 0 <= index < size:
        raise ValueError(f"index {index} is outside a tree of size {size}")
    path = []
    for level in range((size - 1).bit_length()):
        sibling = (index >> level) ^ 1
        begin = sibling << level
        if begin + (1 << level) <= size:
            path.append([(level, sibling)])
        elif begin < size:
            path.append(perfect_nodes(begin, size))
    return path


def consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """Ranges whose hashes form the consistency proof PROOF(size1, D[size2]) of RFC 9162 2.1.4.1."""
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    ranges = []
    begin, end, m, whole_old_tree = 0, size2, size1, True
    while True:
        n = end - begin
        if m == n:
            # SUBPROOF(m, D[m], b): nothing if this is the old tree itself, else its hash.
            if not whole_old_tree:
                ranges.append((begin, end))
            break
        k = largest_power_of_two_below(n)
        if m <= k:
            ranges.append((begin + k, end))
            end = begin + k
        else:
            ranges.append((begin, begin + k))
            begin += k
            m -= k
            whole_old_tree = False
    ranges.reverse()
    return ranges


def consistency_nodes(size1: int, size2: int) -> list[list[NodeId]]:
    """The perfect nodes of each hash of PROOF(size1, D[size2]), walked bottom-up.

    Same result as ``nodes_for_ranges(consistency_ranges(size1, size2))``: with
    ``size1 = odd * 2**level``, the proof is the last perfect subtree of the old tree,
    ``(level, odd - 1)`` (left out when it is the whole old tree, i.e. ``odd == 1``), then that
    node's audit path in the tree of ``size2``, exactly as :func:`inclusion_nodes` walks a leaf's.
    """
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    if size1 == size2:
        return []
    start = (size1 & -size1).bit_length() - 1
    index = (size1 - 1) >> start
    path = [[(start, index)]] if index else []
    for level in range(start, (size2 - 1).bit_length()):
        sibling = (index >> (level - start)) ^ 1
        begin = sibling << level
        if begin + (1 << level) <= size2:
            path.append([(level, sibling)])
        elif begin < size2:
            path.append(perfect_nodes(begin, size2))
    return path


def nodes_for_ranges(ranges: Sequence[tuple[int, int]]) -> list[list[NodeId]]:
    """The perfect nodes each range folds from."""
    return [perfect_nodes(begin, end) for begin, end in ranges]


def hashes_for_ranges(
    ranges: Sequence[tuple[int, int]], node: Callable[[NodeId], bytes]
) -> list[bytes]:
    """Hash each range from the perfect nodes that ``node`` looks up."""
    return [fold([node(n) for n in nodes]) for nodes in nodes_for_ranges(ranges)]


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of a whole list of leaf hashes, computed directly (reference; O(n) memory)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    # Pairwise reduction keeps an odd last node as is: exactly the RFC 9162 split.
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


# ---------------------------------------------------------------------------------------------
# Verification (RFC 9162 2.1.3.2 and 2.1.4.2).  Computing a root and checking it are separate.
# ---------------------------------------------------------------------------------------------


def _check_hash(name: str, value: bytes) -> None:
    if not isinstance(value, (bytes, bytearray)) or len(value) != HASH_SIZE:
        found = len(value) if isinstance(value, (bytes, bytearray)) else type(value).__name__
        raise VerificationError(f"{name}: expected a {HASH_SIZE}-byte hash, found {found} bytes")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` implies for leaf hash ``leaf`` at ``index`` in a tree of ``size``."""
    if not 0 <= index < size:
        raise VerificationError(f"inclusion proof: expected index < size, found index {index}, size {size}")
    _check_hash("leaf hash", leaf)
    for i, p in enumerate(proof):
        _check_hash(f"inclusion proof hash {i}", p)
    fn, sn, r = index, size - 1, leaf
    for used, p in enumerate(proof):
        if sn == 0:
            raise VerificationError(
                f"inclusion proof for index {index} in size {size}: expected {used} hashes, "
                f"found {len(proof)}"
            )
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError(
            f"inclusion proof: expected more hashes for index {index} in size {size}, found {len(proof)}"
        )
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Raise :class:`VerificationError` unless ``proof`` shows ``leaf`` at ``index`` under ``root``."""
    _check_hash("root", root)
    computed = root_from_inclusion_proof(index, size, leaf, proof)
    if computed != root:
        raise VerificationError(
            f"inclusion proof for index {index} in size {size}: expected root {root.hex()}, "
            f"computed {computed.hex()}"
        )


def roots_from_consistency_proof(
    size1: int, size2: int, root1: bytes, proof: Sequence[bytes]
) -> tuple[bytes, bytes]:
    """The (old root, new root) that ``proof`` implies for 0 < size1 < size2.

    ``root1`` seeds the computation when size1 is a power of two (RFC 9162 2.1.4.2 step 2).
    """
    if not 0 < size1 < size2:
        raise VerificationError(f"consistency proof: expected 0 < size1 < size2, found {size1} and {size2}")
    _check_hash("root1", root1)
    for i, p in enumerate(proof):
        _check_hash(f"consistency proof hash {i}", p)
    if not proof:
        raise VerificationError(f"consistency proof {size1} -> {size2}: expected hashes, found none")
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError(
                f"consistency proof {size1} -> {size2}: expected fewer hashes, found {len(proof)}"
            )
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError(
            f"consistency proof {size1} -> {size2}: expected more hashes, found {len(proof)}"
        )
    return fr, sr


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Raise :class:`VerificationError` unless ``proof`` shows tree ``size1`` is a prefix of ``size2``.

    Edge cases as the transparency-dev verifier decides them: equal sizes need an empty proof and
    equal roots; a proof from the empty tree (size1 = 0) is meaningless, even to itself.
    """
    if size2 < size1:
        raise VerificationError(f"consistency proof: expected size2 >= size1, found {size2} < {size1}")
    if size1 == 0:
        raise VerificationError(f"consistency proof from the empty tree (size {size2}): expected size1 >= 1, found 0")
    if size1 == size2:
        if proof:
            raise VerificationError(f"consistency proof for equal sizes {size1}: expected no hashes, found {len(proof)}")
        if root1 != root2:
            raise VerificationError(
                f"consistency proof for equal sizes {size1}: expected equal roots, found {bytes(root1).hex()} "
                f"and {bytes(root2).hex()}"
            )
        return
    _check_hash("root2", root2)
    old, new = roots_from_consistency_proof(size1, size2, root1, proof)
    if old != root1:
        raise VerificationError(
            f"consistency proof {size1} -> {size2}: expected old root {root1.hex()}, computed {old.hex()}"
        )
    if new != root2:
        raise VerificationError(
            f"consistency proof {size1} -> {size2}: expected new root {root2.hex()}, computed {new.hex()}"
        )
