"""Ethereum ABI encoding of the CheckpointAnchor contract's one function and one event: pure.

Only what the contract needs is implemented (static words, one dynamic ``string``), following the
Solidity ABI specification's head/tail layout.  Keccak-256 is not in :mod:`hashlib` (its
``sha3_256`` is FIPS 202 SHA-3, a different padding), so the selector and the event topic are
constants here; a test recomputes them with a real Keccak so that they cannot drift from the
signatures below.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..errors import AnchorVerificationError

FUNCTION_SIGNATURE = "anchor(string,uint64,bytes32)"
EVENT_SIGNATURE = "Anchored(bytes32,uint64,bytes32,string)"
#: keccak256(FUNCTION_SIGNATURE)[:4]
ANCHOR_SELECTOR = bytes.fromhex("d0ee1f22")
#: keccak256(EVENT_SIGNATURE): topic 0 of every Anchored log
ANCHORED_TOPIC = bytes.fromhex("8f6f2c9fbf49dbecf5d705e2f3bb1ac0a1356629943e7a5b636d0c1f1d239811")
#: keccak256("NotOperator(address)")[:4]: the revert of a call by another account
NOT_OPERATOR_SELECTOR = bytes.fromhex("76c6c93a")
#: keccak256("operator()")[:4]
OPERATOR_SELECTOR = bytes.fromhex("570ca735")

WORD = 32
UINT64_MAX = 2**64 - 1


def origin_hash(origin: str) -> bytes:
    """Topic 1 of an Anchored log: SHA-256 of the origin line, as the contract computes it."""
    return hashlib.sha256(origin.encode("utf-8")).digest()


def _uint(value: int) -> bytes:
    return value.to_bytes(WORD, "big")


def _padded(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % WORD)


def _check_anchor_args(size: int, root: bytes) -> None:
    if not 0 <= size <= UINT64_MAX:
        raise ValueError(f"size must fit in uint64, got {size}")
    if len(root) != WORD:
        raise ValueError(f"root must be 32 bytes, got {len(root)}")


def encode_anchor_call(origin: str, size: int, root: bytes) -> bytes:
    """Calldata of ``anchor(origin, size, root)``."""
    _check_anchor_args(size, root)
    text = origin.encode("utf-8")
    head = _uint(3 * WORD) + _uint(size) + root  # the string's tail starts after three head words
    return ANCHOR_SELECTOR + head + _uint(len(text)) + _padded(text)


def _read_string(data: bytes, offset: int, what: str) -> str:
    if offset + WORD > len(data):
        raise AnchorVerificationError(f"{what}: expected a string at byte {offset}, found {len(data)} bytes")
    length = int.from_bytes(data[offset : offset + WORD], "big")
    start = offset + WORD
    if start + length > len(data):
        raise AnchorVerificationError(f"{what}: expected {length} string bytes, found {len(data) - start}")
    try:
        return data[start : start + length].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AnchorVerificationError(f"{what}: expected UTF-8 origin, found invalid bytes") from exc


def decode_anchor_call(calldata: bytes) -> tuple[str, int, bytes]:
    """(origin, size, root) from ``anchor`` calldata."""
    if calldata[:4] != ANCHOR_SELECTOR or len(calldata) < 4 + 4 * WORD:
        raise AnchorVerificationError(f"calldata: expected anchor(string,uint64,bytes32), found {calldata[:4].hex()}")
    body = calldata[4:]
    size = int.from_bytes(body[WORD : 2 * WORD], "big")
    if size > UINT64_MAX:
        raise AnchorVerificationError(f"calldata: expected a uint64 size, found {size}")
    offset = int.from_bytes(body[:WORD], "big")
    return _read_string(body, offset, "calldata"), size, body[2 * WORD : 3 * WORD]


@dataclass(frozen=True)
class AnchoredEvent:
    """One decoded Anchored log, with where it is on chain."""

    contract: str  # 0x-address, lower case
    origin_hash: bytes
    size: int
    root: bytes
    origin: str
    block_number: int
    block_hash: str
    transaction_hash: str
    log_index: int
    removed: bool = False


def encode_event_data(root: bytes, origin: str) -> bytes:
    """The non-indexed part of an Anchored log (what the contract emits): for tests and tooling."""
    text = origin.encode("utf-8")
    return root + _uint(2 * WORD) + _uint(len(text)) + _padded(text)


def decode_anchored_log(log: dict) -> AnchoredEvent:
    """Decode one ``eth_getLogs`` entry (JSON-RPC hex fields) of an Anchored event."""
    topics = [bytes.fromhex(t[2:]) for t in log.get("topics", [])]
    if len(topics) != 3 or topics[0] != ANCHORED_TOPIC:
        found = topics[0].hex() if topics else "no topics"
        raise AnchorVerificationError(f"log: expected an Anchored event ({ANCHORED_TOPIC.hex()}), found {found}")
    data = bytes.fromhex(log["data"][2:])
    if len(data) < 3 * WORD:
        raise AnchorVerificationError(f"Anchored data: expected at least 96 bytes, found {len(data)}")
    size = int.from_bytes(topics[2], "big")
    if size > UINT64_MAX:
        raise AnchorVerificationError(f"Anchored size: expected a uint64, found {size}")
    origin = _read_string(data, int.from_bytes(data[WORD : 2 * WORD], "big"), "Anchored data")
    return AnchoredEvent(
        contract=log["address"].lower(),
        origin_hash=topics[1],
        size=size,
        root=data[:WORD],
        origin=origin,
        block_number=int(log["blockNumber"], 16),
        block_hash=log["blockHash"].lower(),
        transaction_hash=log["transactionHash"].lower(),
        log_index=int(log["logIndex"], 16),
        removed=bool(log.get("removed", False)),
    )


def encode_size_topic(size: int) -> bytes:
    """Topic 2 of an Anchored log: the size as a 32-byte word, for eth_getLogs filters."""
    return _uint(size)
