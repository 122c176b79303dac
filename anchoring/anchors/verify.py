"""Verify a checkpoint's anchor on an EVM chain: find the Anchored event and check every field.

Checks, each failing with an :class:`AnchorVerificationError` that names it: ``chain`` (the
endpoint serves the expected chain id), ``contract`` (code at the address; the event is in that
contract), ``origin``, ``size``, ``root`` (the event records exactly the checkpoint) and
``confirmations`` (the block is deep enough in the canonical chain).
"""

from __future__ import annotations

import base64

from ..checkpoint import Checkpoint
from ..errors import AnchorError, AnchorVerificationError
from .abi import ANCHORED_TOPIC, AnchoredEvent, decode_anchored_log, encode_size_topic, origin_hash
from .artifact import operator_from_code
from .base import AnchorEvidence
from .rpc import RpcClient


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def check_chain(rpc: RpcClient, expected: int) -> None:
    found = rpc.chain_id()
    if found != expected:
        raise AnchorVerificationError(
            f"chain: expected chain id {expected}, found {found} at the RPC endpoint: it serves another chain; "
            "check anchor_rpc_url and anchor_chain_id"
        )


def check_contract_code(rpc: RpcClient, contract: str) -> str:
    """The contract at ``contract`` is CheckpointAnchor; returns its operator (the only anchoring account)."""
    return operator_from_code(rpc.code(contract), contract)


def find_anchor_events(rpc: RpcClient, contract: str | None, origin: str, size: int,
                       from_block: int = 0) -> list[AnchoredEvent]:
    """Anchored events of (origin, size), in ``contract`` or, with None, in any contract."""
    topics = [_hex(ANCHORED_TOPIC), _hex(origin_hash(origin)), _hex(encode_size_topic(size))]
    return [decode_anchored_log(entry) for entry in rpc.logs(contract, topics, from_block)]


def check_event(event: AnchoredEvent, checkpoint: Checkpoint) -> None:
    """Pure: the event records exactly this checkpoint."""
    if event.origin_hash != origin_hash(event.origin) or event.origin != checkpoint.origin:
        raise AnchorVerificationError(
            f"origin: expected {checkpoint.origin!r}, found {event.origin!r} in transaction {event.transaction_hash}"
        )
    if event.size != checkpoint.size:
        raise AnchorVerificationError(
            f"size: expected {checkpoint.size}, found {event.size} in transaction {event.transaction_hash}"
        )
    if event.root != checkpoint.root:
        raise AnchorVerificationError(
            f"root: expected {_b64(checkpoint.root)} (the checkpoint's), found {_b64(event.root)} anchored in "
            f"transaction {event.transaction_hash} block {event.block_number}: the checkpoint is not the one anchored"
        )


def verify_evm_anchor(rpc: RpcClient, checkpoint: Checkpoint, chain_id: int, contract: str,
                      min_confirmations: int, from_block: int = 0) -> AnchorEvidence:
    contract = contract.lower()
    check_chain(rpc, chain_id)
    operator = check_contract_code(rpc, contract)
    events = [e for e in find_anchor_events(rpc, contract, checkpoint.origin, checkpoint.size, from_block)
              if not e.removed]
    if not events:
        elsewhere: list[AnchoredEvent] = []
        try:  # a diagnostic only: some public endpoints refuse address-less log queries
            elsewhere = find_anchor_events(rpc, None, checkpoint.origin, checkpoint.size, from_block)
        except AnchorError:
            pass
        if elsewhere:
            raise AnchorVerificationError(
                f"contract: expected the anchor of {checkpoint.origin!r} size {checkpoint.size} in contract {contract}, "
                f"found it only in {', '.join(sorted({e.contract for e in elsewhere}))} on chain {chain_id}"
            )
        raise AnchorVerificationError(
            f"anchor: expected an Anchored event of origin {checkpoint.origin!r} size {checkpoint.size} in contract "
            f"{contract} on chain {chain_id} (from block {from_block}), found none"
        )
    matching = [e for e in events if e.root == checkpoint.root and e.origin == checkpoint.origin]
    if not matching:
        check_event(events[0], checkpoint)  # raises, naming the field that differs
    event = matching[0]
    check_event(event, checkpoint)
    head = rpc.block_number()
    canonical = rpc.block(event.block_number)
    if canonical is None or str(canonical.get("hash", "")).lower() != event.block_hash:
        raise AnchorVerificationError(
            f"confirmations: expected block {event.block_number} {event.block_hash} in the canonical chain, found "
            f"{'no block' if canonical is None else canonical.get('hash')}: a reorg; the bridge re-sends the anchor"
        )
    confirmations = head - event.block_number + 1
    if confirmations < min_confirmations:
        raise AnchorVerificationError(
            f"confirmations: expected at least {min_confirmations}, found {confirmations} "
            f"(transaction {event.transaction_hash}, block {event.block_number}); wait for more blocks and verify again"
        )
    return AnchorEvidence(
        "evm", checkpoint.origin, checkpoint.size, checkpoint.root,
        f"chain {chain_id} contract {contract} transaction {event.transaction_hash} block {event.block_number}",
        confirmations,
        {"chain_id": chain_id, "contract": contract, "operator": operator, "transaction_hash": event.transaction_hash,
         "block_number": event.block_number, "block_hash": event.block_hash, "log_index": event.log_index,
         "duplicates": len(events) - 1},
    )
