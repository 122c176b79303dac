"""The ``evm`` anchor backend: the CheckpointAnchor contract on any Ethereum JSON-RPC chain
(Besu, GoQuorum, public Ethereum networks, anvil).

Transactions are signed by an injected :class:`TransactionSigner` (the bridge's, with
eth-account: this package holds no key), or sent from an account the node keeps unlocked
(``eth_sendTransaction``).  A signed transaction is stored before it is broadcast and is
re-broadcast byte for byte when the node has lost it (restart) or a reorg dropped its block: the
same nonce means at most one of its copies can ever be mined, so a checkpoint is never anchored
twice by a retry.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from ..checkpoint import Checkpoint
from ..errors import AnchorError
from .abi import encode_anchor_call
from .artifact import load_artifact
from .base import AnchorEvidence, Save
from .fees import (
    GWEI,
    Fees,
    eip1559_fees,
    legacy_fees,
    replacement_fees,
    rpc_transaction,
    transaction_fields,
    with_margin,
)
from .rpc import RpcClient, RpcError
from .store import AnchorRecord, now
from .verify import check_chain, check_contract_code, find_anchor_events, verify_evm_anchor

log = logging.getLogger("anchoring.anchors.evm")

DEFAULT_PRIORITY_FEE = 1 * GWEI  # when the node cannot suggest a tip
#: how far back to look for an anchor of ours whose hash was lost (within public nodes' log limits)
LOOKBACK_BLOCKS = 5_000


class TransactionSigner(Protocol):
    #: 0x-address of the signing account
    address: str

    def sign(self, tx: dict) -> tuple[bytes, str]:
        """(raw signed transaction, 0x transaction hash) for eth-account style fields."""
        ...


def _lost(exc: RpcError) -> str | None:
    """Classify a send error: 'known' (the node has it), 'nonce' (the nonce is used), or None."""
    message = exc.rpc_message.lower()
    if "already known" in message or "known transaction" in message or "already imported" in message:
        return "known"
    if "nonce too low" in message or "nonce is too low" in message or "old nonce" in message:
        return "nonce"
    return None


class EvmBackend:
    name = "evm"

    def __init__(
        self,
        rpc: RpcClient,
        chain_id: int,
        contract: str | None,
        confirmations: int = 12,
        signer: TransactionSigner | None = None,
        sender: str | None = None,
        max_fee_gwei: float = 0.0,
        progress: Callable[[str], None] | None = None,
        replace_after: float = 600.0,
    ) -> None:
        if signer is None and not sender:
            raise AnchorError("the evm backend needs a signing key (anchor_key_file or FHIR_BRIDGE_ANCHOR_KEY) "
                              "or an unlocked node account (anchor_from)")
        if confirmations < 1:
            raise AnchorError(f"anchor_confirmations must be at least 1, found {confirmations}")
        self.rpc = rpc
        self.chain_id = chain_id
        self.contract = contract.lower() if contract else None
        self.confirmations = confirmations
        self.signer = signer
        self.sender = (signer.address if signer is not None else str(sender)).lower()
        self.max_fee = int(max_fee_gwei * GWEI) if max_fee_gwei > 0 else None
        self.progress = progress or (lambda message: None)
        #: seconds a transaction may wait in the pool before it is replaced with higher fees; 0: never
        self.replace_after = replace_after
        self.target = f"evm:{chain_id}:{self.contract}"

    # -- checks -----------------------------------------------------------------------------

    def prepare(self) -> None:
        check_chain(self.rpc, self.chain_id)
        if self.contract is None:
            raise AnchorError("anchor_contract is not set: run `fhir-bridge anchor deploy` and set it")
        operator = check_contract_code(self.rpc, self.contract)
        if operator != self.sender:
            raise AnchorError(
                f"the sending account {self.sender} is not the operator {operator} of contract {self.contract}, "
                "so its anchors would revert: use the key that deployed the contract, or deploy a new one"
            )

    # -- transactions -----------------------------------------------------------------------

    def fees(self) -> Fees:
        latest = self.rpc.block("latest") or {}
        base_fee = latest.get("baseFeePerGas")
        if base_fee is None:  # a chain without EIP-1559 (some GoQuorum networks): legacy gas price
            return legacy_fees(self.rpc.gas_price(), self.max_fee)
        try:
            tip = self.rpc.max_priority_fee()
        except RpcError:
            try:
                rewards = self.rpc.fee_history(5, [50]).get("reward") or []
                tips = sorted(int(r[0], 16) for r in rewards if r)
                tip = tips[len(tips) // 2] if tips else DEFAULT_PRIORITY_FEE
            except RpcError:
                tip = DEFAULT_PRIORITY_FEE
        return eip1559_fees(int(base_fee, 16), tip, self.max_fee)

    def _transaction(self, nonce: int, to: str | None, data: bytes) -> dict:
        estimate_fields = {"from": self.sender, "data": "0x" + data.hex()}
        if to is not None:
            estimate_fields["to"] = to
        gas = with_margin(self.rpc.estimate_gas(estimate_fields))
        return transaction_fields(self.chain_id, nonce, to, data, gas, self.fees())

    def _next_nonce(self, min_nonce: int) -> int:
        return max(self.rpc.nonce(self.sender, "pending"), min_nonce)

    def _send(self, record: AnchorRecord, tx: dict, save: Save, checkpoint: Checkpoint) -> AnchorRecord:
        """Sign, store, then broadcast: a crash between the two re-broadcasts the stored bytes."""
        if self.signer is not None:
            raw, tx_hash = self.signer.sign(tx)
            record = save(replace(record, status="signed", nonce=tx["nonce"], tx_hash=tx_hash.lower(), raw_tx=raw,
                                  tx_fields=json.dumps(tx), sender=self.sender, attempts=record.attempts + 1))
            return self._broadcast(record, save, checkpoint)
        record = save(replace(record, status="signed", nonce=tx["nonce"], sender=self.sender,
                              raw_tx=json.dumps(tx).encode(), tx_fields=json.dumps(tx), attempts=record.attempts + 1))
        return self._broadcast(record, save, checkpoint)

    def _broadcast(self, record: AnchorRecord, save: Save, checkpoint: Checkpoint) -> AnchorRecord:
        try:
            if self.signer is not None:
                tx_hash = self.rpc.send_raw_transaction(record.raw_tx or b"")
            else:
                tx = json.loads((record.raw_tx or b"{}").decode())
                tx_hash = self.rpc.send_transaction(rpc_transaction(tx, self.sender))
        except RpcError as exc:
            kind = _lost(exc)
            if kind == "known":
                return save(replace(record, status="sent", last_error=None))
            if kind == "nonce":
                # Either our own transaction was mined meanwhile (then it is on chain: keep it), or
                # the nonce went to another transaction of this account: only then send anew.
                if record.tx_hash and self.rpc.receipt(record.tx_hash) is not None:
                    return save(replace(record, status="sent", last_error=None))
                mine = self._anchored(checkpoint, record)
                if mine is not None:
                    return save(replace(record, status="sent", tx_hash=mine, last_error=None))
                log.warning("anchor of size %d: nonce %s went to another transaction; sending with a new nonce",
                            record.size, record.nonce)
                return save(replace(record, status="pending", nonce=None, tx_hash=None, raw_tx=None,
                                    last_error=str(exc)))
            raise
        return save(replace(record, status="sent", tx_hash=tx_hash, block_number=None, block_hash=None,
                            last_error=None, sent_at=now()))

    def _waited(self, record: AnchorRecord) -> float:
        if record.sent_at is None:
            return 0.0
        return (datetime.fromisoformat(now()) - datetime.fromisoformat(record.sent_at)).total_seconds()

    def _replace(self, record: AnchorRecord, checkpoint: Checkpoint, save: Save) -> AnchorRecord:
        """Same nonce, higher fees: whichever of the two is mined, the checkpoint is anchored once."""
        old = json.loads(record.tx_fields or "{}")
        fees = replacement_fees(old, self.fees(), self.max_fee)
        tx = transaction_fields(self.chain_id, old["nonce"], old.get("to"), bytes.fromhex(old["data"][2:]),
                                old["gas"], fees)
        self.progress(f"anchor of size {record.size}: {record.tx_hash} waited {self._waited(record):.0f} s in the "
                      f"pool; replacing it with higher fees (nonce {old['nonce']})")
        log.info("anchor of size %d: replacing stuck transaction %s", record.size, record.tx_hash)
        return self._send(record, tx, save, checkpoint)

    def _anchored(self, checkpoint: Checkpoint, record: AnchorRecord) -> str | None:
        """The hash of a transaction of ours already anchoring exactly this checkpoint, if any."""
        recent = max(0, self.rpc.block_number() - LOOKBACK_BLOCKS)
        for event in find_anchor_events(self.rpc, self.contract, checkpoint.origin, checkpoint.size, recent):
            if event.root == checkpoint.root and not event.removed:
                return event.transaction_hash
        return None

    # -- the backend interface --------------------------------------------------------------

    def submit(self, record: AnchorRecord, checkpoint: Checkpoint, save: Save, min_nonce: int = 0) -> AnchorRecord:
        if self.contract is None:
            raise AnchorError("anchor_contract is not set: run `fhir-bridge anchor deploy` and set it")
        data = encode_anchor_call(checkpoint.origin, checkpoint.size, checkpoint.root)
        tx = self._transaction(self._next_nonce(min_nonce), self.contract, data)
        record = replace(record, chain_id=self.chain_id, contract=self.contract)
        record = self._send(record, tx, save, checkpoint)
        self.progress(f"anchor of size {checkpoint.size}: sent transaction {record.tx_hash} (nonce {record.nonce})")
        return record

    def track(self, record: AnchorRecord, checkpoint: Checkpoint, save: Save, min_nonce: int = 0) -> AnchorRecord:
        if record.status == "pending" or record.tx_hash is None:
            if record.status == "signed" and record.raw_tx is not None:  # unlocked account: crashed mid-send
                mine = self._anchored(checkpoint, record)
                if mine is not None:
                    record = save(replace(record, status="sent", tx_hash=mine))
                    return self.track(record, checkpoint, save, min_nonce)
                return self._broadcast(record, save, checkpoint)
            return self.submit(record, checkpoint, save, min_nonce)
        receipt = self.rpc.receipt(record.tx_hash)
        if receipt is not None and receipt.get("blockHash") is not None:
            number = int(receipt["blockNumber"], 16)
            block = self.rpc.block(number)
            if block is not None and str(block.get("hash", "")).lower() == str(receipt["blockHash"]).lower():
                if int(receipt.get("status", "0x1"), 16) != 1:
                    raise AnchorError(
                        f"anchor of size {record.size}: transaction {record.tx_hash} reverted; is {self.sender} the "
                        f"operator that deployed {self.contract}? (only it may anchor)"
                    )
                head = self.rpc.block_number()
                confirmations = head - number + 1
                status = "confirmed" if confirmations >= self.confirmations else "included"
                if status != record.status:
                    self.progress(f"anchor of size {record.size}: {status} in block {number} "
                                  f"({confirmations}/{self.confirmations} confirmations)")
                return save(replace(record, status=status, block_number=number,
                                    block_hash=str(receipt["blockHash"]).lower(), head=head, last_error=None))
        # Not in a canonical block.
        if record.status in ("included", "confirmed"):
            log.warning("anchor of size %d: block %s left the canonical chain (reorg); re-sending %s",
                        record.size, record.block_number, record.tx_hash)
            self.progress(f"anchor of size {record.size}: reorg dropped block {record.block_number}; re-sending")
        pending = self.rpc.transaction(record.tx_hash)
        if pending is not None and pending.get("blockHash") is None:  # still in the pool
            if self.replace_after > 0 and record.tx_fields and self._waited(record) >= self.replace_after:
                return self._replace(record, checkpoint, save)
            return save(replace(record, status="sent", block_number=None, block_hash=None))
        self.progress(f"anchor of size {record.size}: node does not know {record.tx_hash}; broadcasting it again")
        return self._broadcast(replace(record, status="signed", block_number=None, block_hash=None,
                                       attempts=record.attempts + 1), save, checkpoint)

    def verify(self, checkpoint: Checkpoint, from_block: int = 0) -> AnchorEvidence:
        if self.contract is None:
            raise AnchorError("anchor_contract is not set: nothing to verify against")
        return verify_evm_anchor(self.rpc, checkpoint, self.chain_id, self.contract, self.confirmations, from_block)

    def deploy(self, timeout: float = 300.0, poll: float = 1.0) -> tuple[str, str, int]:
        """Deploy the committed CheckpointAnchor bytecode; returns (contract address, tx hash, gas used)."""
        check_chain(self.rpc, self.chain_id)
        bytecode = bytes.fromhex(load_artifact()["bytecode"][2:])
        tx = self._transaction(self._next_nonce(0), None, bytecode)
        if self.signer is not None:
            raw, _ = self.signer.sign(tx)
            tx_hash = self.rpc.send_raw_transaction(raw)
        else:
            tx_hash = self.rpc.send_transaction(rpc_transaction(tx, self.sender))
        self.progress(f"deploying CheckpointAnchor from {self.sender} on chain {self.chain_id}: transaction {tx_hash}")
        receipt = self.wait_for_receipt(tx_hash, timeout, poll)
        if int(receipt.get("status", "0x1"), 16) != 1 or not receipt.get("contractAddress"):
            raise AnchorError(f"deployment transaction {tx_hash} failed (receipt status {receipt.get('status')})")
        return str(receipt["contractAddress"]).lower(), tx_hash, int(receipt["gasUsed"], 16)

    def wait_for_receipt(self, tx_hash: str, timeout: float = 300.0, poll: float = 1.0) -> dict:
        deadline = time.monotonic() + timeout
        waited = 0
        while True:
            receipt = self.rpc.receipt(tx_hash)
            if receipt is not None and receipt.get("blockNumber") is not None:
                return receipt
            if time.monotonic() > deadline:
                raise AnchorError(f"transaction {tx_hash} not mined after {timeout:.0f} s; check the node and fees, "
                                  "then run the command again (the transaction may still be mined)")
            waited += 1
            if waited % 10 == 0:
                self.progress(f"waiting for {tx_hash} to be mined ({waited * poll:.0f} s)")
            time.sleep(poll)

    def close(self) -> None:
        self.rpc.close()
