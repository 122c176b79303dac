"""The evm backend against eth-tester with py-evm, in-process, over JSON-RPC: an unlocked node
account (eth_sendTransaction) and a locally signed key (eth_sendRawTransaction)."""

from __future__ import annotations

import pytest

from anchoring.anchors.abi import decode_anchor_call
from anchoring.checkpoint import Checkpoint
from anchoring.errors import AnchorVerificationError

from .conftest import anchorer, append, deploy, make_evm

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_unlocked_account_deploy_anchor_verify(eth_tester_node, merkle_log, store, signer):
    node = eth_tester_node
    sender = node.accounts[0]
    contract = deploy(node.url, node.chain_id, sender=sender)
    backend = make_evm(node.url, node.chain_id, contract, sender=sender)
    runner = anchorer(merkle_log, store, backend, signer)

    append(merkle_log, 11)
    record = runner.run_once().new
    assert record is not None and record.status == "confirmed"  # eth-tester mines each transaction
    cp = merkle_log.latest_checkpoint().checkpoint
    evidence = backend.verify(cp)
    assert evidence.details["block_number"] == record.block_number

    tx = node.tester.get_transaction_by_hash(record.tx_hash)  # what was sent is what the ABI says
    calldata = tx.get("data", tx.get("input"))
    assert decode_anchor_call(bytes.fromhex(calldata[2:])) == (cp.origin, cp.size, cp.root)
    assert int(str(tx["type"]), 0) == 2  # EIP-1559

    with pytest.raises(AnchorVerificationError, match="^root: "):
        backend.verify(Checkpoint(cp.origin, cp.size, b"\x01" * 32))
    assert runner.run_once().new is None


def test_signed_transactions(eth_tester_node, tx_signer, merkle_log, store, signer):
    node = eth_tester_node
    node.tester.send_transaction({"from": node.accounts[0], "to": tx_signer.address, "value": 10**19,
                                  "gas": 21000, "max_fee_per_gas": 10**10, "max_priority_fee_per_gas": 10**9})
    contract = deploy(node.url, node.chain_id, signer=tx_signer)
    backend = make_evm(node.url, node.chain_id, contract, signer=tx_signer)
    runner = anchorer(merkle_log, store, backend, signer)
    for n in (2, 3):
        append(merkle_log, n, tag=f"batch{n}-")
        assert runner.run_once().new.status == "confirmed"
    nonces = sorted(r.nonce for r in store.list(backend.target))
    assert nonces == [1, 2]  # nonce 0 deployed the contract
    backend.verify(merkle_log.latest_checkpoint().checkpoint)
