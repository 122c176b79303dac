"""The evm backend against a real anvil node: deploy, anchor, verify; node killed mid-flight;
a reorg; wrong contract, chain or checkpoint; only the operator may anchor."""

from __future__ import annotations

import json
import time

import pytest

from anchoring.anchors.abi import ANCHORED_TOPIC, encode_anchor_call, origin_hash
from anchoring.anchors.rpc import RpcError
from anchoring.checkpoint import Checkpoint
from anchoring.errors import AnchorVerificationError

from .conftest import ORIGIN, anchorer, append, deploy, make_evm
from .nodes import Anvil

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
MAX_GAS_PER_ANCHOR = 35_000  # issue #4's target; bench/anchor_bench.py prints the figures


def anchored_events(node: Anvil, contract: str) -> list[dict]:
    return node.rpc("eth_getLogs", {"address": contract, "fromBlock": "0x0", "toBlock": "latest",
                                    "topics": ["0x" + ANCHORED_TOPIC.hex(), "0x" + origin_hash(ORIGIN).hex()]})


def test_deploy_anchor_verify(anvil, tx_signer, merkle_log, store, signer):  # SQLite and PostgreSQL
    anvil.fund(tx_signer.address)
    contract = deploy(anvil.url, anvil.chain_id, signer=tx_signer)
    backend = make_evm(anvil.url, anvil.chain_id, contract, signer=tx_signer, confirmations=2)
    runner = anchorer(merkle_log, store, backend, signer)

    append(merkle_log, 5)
    report = runner.run_once()
    assert not report.errors and report.new is not None
    assert report.new.status == "included"  # automine: in a block, 1 of 2 confirmations
    with pytest.raises(AnchorVerificationError, match="confirmations: expected at least 2, found 1"):
        backend.verify(merkle_log.latest_checkpoint().checkpoint)
    anvil.rpc("evm_mine")
    [record] = runner.run_once().tracked
    assert record.status == "confirmed" and record.confirmations == 2

    evidence = backend.verify(merkle_log.latest_checkpoint().checkpoint)
    assert evidence.details["transaction_hash"] == record.tx_hash
    gas_used = int(anvil.rpc("eth_getTransactionReceipt", record.tx_hash)["gasUsed"], 16)
    assert gas_used <= MAX_GAS_PER_ANCHOR
    assert runner.run_once().new is None  # the log did not grow: nothing anchored twice
    assert len(anchored_events(anvil, contract)) == 1

    append(merkle_log, 3)
    assert runner.run_once().new.size == 8
    assert len(anchored_events(anvil, contract)) == 2


@sqlite_only
def test_verification_names_what_differs(anvil, tx_signer, merkle_log, store, signer):
    anvil.fund(tx_signer.address)
    contract = deploy(anvil.url, anvil.chain_id, signer=tx_signer)
    other = deploy(anvil.url, anvil.chain_id, signer=tx_signer)
    backend = make_evm(anvil.url, anvil.chain_id, contract, signer=tx_signer)
    append(merkle_log, 4)
    anchorer(merkle_log, store, backend, signer).run_once()
    cp = merkle_log.latest_checkpoint().checkpoint

    with pytest.raises(AnchorVerificationError, match=r"^root: expected .* found .* anchored in transaction"):
        backend.verify(Checkpoint(cp.origin, cp.size, bytes(32)))
    with pytest.raises(AnchorVerificationError, match=rf"^contract: expected the anchor .* in contract {other}, "
                                                      rf"found it only in {contract}"):
        make_evm(anvil.url, anvil.chain_id, other, signer=tx_signer).verify(cp)
    with pytest.raises(AnchorVerificationError, match="^chain: expected chain id 5, found 31337"):
        make_evm(anvil.url, 5, contract, signer=tx_signer).verify(cp)
    with pytest.raises(AnchorVerificationError, match="^contract: expected the CheckpointAnchor contract at 0x00"):
        make_evm(anvil.url, anvil.chain_id, "0x" + "00" * 19 + "01", signer=tx_signer).verify(cp)
    anvil.rpc("anvil_setCode", "0x" + "00" * 19 + "02", "0x6001600055")  # some other contract
    with pytest.raises(AnchorVerificationError, match="^contract: expected the CheckpointAnchor runtime code"):
        make_evm(anvil.url, anvil.chain_id, "0x" + "00" * 19 + "02", signer=tx_signer).verify(cp)
    assert backend.verify(cp).details["operator"] == tx_signer.address.lower()
    with pytest.raises(AnchorVerificationError, match="^anchor: expected an Anchored event .* size 5"):
        backend.verify(Checkpoint(cp.origin, 5, cp.root))


@sqlite_only
def test_only_the_operator_may_anchor(anvil, tx_signer, merkle_log, store, signer):
    from bridge.anchor_signing import LocalTransactionSigner

    intruder = LocalTransactionSigner("0x" + "11" * 32)
    anvil.fund(tx_signer.address)
    anvil.fund(intruder.address)
    contract = deploy(anvil.url, anvil.chain_id, signer=tx_signer)
    append(merkle_log, 2)
    backend = make_evm(anvil.url, anvil.chain_id, contract, signer=intruder)
    # The backend refuses before sending; and the contract itself reverts a direct attempt.
    report = anchorer(merkle_log, store, backend, signer).run_once()
    assert report.errors and f"the sending account {intruder.address.lower()} is not the operator " \
                             f"{tx_signer.address.lower()}" in report.errors[0]
    cp = merkle_log.checkpoint(signer).checkpoint
    with pytest.raises(RpcError, match="(?i)revert"):
        backend.rpc.estimate_gas({"from": intruder.address, "to": contract,
                                  "data": "0x" + encode_anchor_call(cp.origin, cp.size, cp.root).hex()})
    assert anchored_events(anvil, contract) == []


@sqlite_only
def test_node_killed_while_anchor_in_flight(tmp_state, tx_signer, merkle_log, store, signer):
    node = Anvil(state=tmp_state).start()
    try:
        node.fund(tx_signer.address)
        contract = deploy(node.url, node.chain_id, signer=tx_signer)
        node.rpc("evm_setAutomine", False)  # keep the anchor in the pool: in flight
        backend = make_evm(node.url, node.chain_id, contract, signer=tx_signer, retries=1)
        runner = anchorer(merkle_log, store, backend, signer)
        append(merkle_log, 7)
        sent = runner.run_once().new
        assert sent is not None and sent.status == "sent"
        time.sleep(1.3)  # --state-interval 1: the deployment is on disk
        node.stop(kill=True)

        # The node is down: the round fails after its retries, says why, and keeps the anchor.
        report = runner.run_once()
        assert report.errors and "unreachable" in report.errors[0]
        down = store.get(backend.target, 7)
        assert down.status == "sent" and "unreachable" in down.last_error

        node.start()  # same port, chain state loaded from --state; the pool is empty
        assert node.rpc("eth_getCode", contract, "latest") != "0x"
        for _ in range(3):
            report = runner.run_once()
            assert not report.errors
        record = store.get(backend.target, 7)
        assert record.status == "confirmed" and record.tx_hash == sent.tx_hash  # the same bytes, re-broadcast
        assert len(anchored_events(node, contract)) == 1  # nothing anchored twice
        backend.verify(merkle_log.latest_checkpoint().checkpoint)
    finally:
        node.stop()


@sqlite_only
def test_reorg_makes_the_bridge_anchor_again(anvil, tx_signer, merkle_log, store, signer):
    anvil.fund(tx_signer.address)
    contract = deploy(anvil.url, anvil.chain_id, signer=tx_signer)
    backend = make_evm(anvil.url, anvil.chain_id, contract, signer=tx_signer)
    runner = anchorer(merkle_log, store, backend, signer)
    append(merkle_log, 3)
    snapshot = anvil.rpc("evm_snapshot")
    first = runner.run_once().new
    runner.run_once()
    assert store.get(backend.target, 3).status == "confirmed"

    anvil.rpc("evm_revert", snapshot)  # the anchor's block leaves the canonical chain
    anvil.rpc("anvil_mine", "0x3")  # ... and other blocks replace it
    assert anchored_events(anvil, contract) == []
    with pytest.raises(AnchorVerificationError, match="^anchor: expected an Anchored event"):
        backend.verify(merkle_log.latest_checkpoint().checkpoint)

    runner.run_once()  # the bridge notices and sends the same transaction again
    runner.run_once()
    record = store.get(backend.target, 3)
    assert record.status == "confirmed" and record.attempts == 2
    assert record.block_number != first.block_number
    assert len(anchored_events(anvil, contract)) == 1
    backend.verify(merkle_log.latest_checkpoint().checkpoint)


@sqlite_only
def test_an_anchor_already_on_chain_is_never_sent_again(anvil, tx_signer, merkle_log, store, signer):
    """Lost track of a mined anchor (hash not stored, or re-broadcast after it was mined): the
    bridge finds it on chain by its event instead of anchoring a second time."""
    from dataclasses import replace

    anvil.fund(tx_signer.address)
    contract = deploy(anvil.url, anvil.chain_id, signer=tx_signer)
    backend = make_evm(anvil.url, anvil.chain_id, contract, signer=tx_signer)
    runner = anchorer(merkle_log, store, backend, signer)
    append(merkle_log, 6)
    mined = runner.run_once().new
    assert mined.status == "confirmed"

    # A crash between sending and storing the hash (possible with an unlocked node account).
    store.save(replace(mined, status="signed", tx_hash=None, block_number=None, block_hash=None))
    runner.run_once()
    assert store.get(backend.target, 6).tx_hash == mined.tx_hash

    # The stored hash is unknown to the node and re-broadcasting says "nonce too low".
    store.save(replace(mined, status="sent", tx_hash="0x" + "ab" * 32, block_number=None))
    runner.run_once()
    runner.run_once()
    record = store.get(backend.target, 6)
    assert record.status == "confirmed" and record.tx_hash == mined.tx_hash
    assert len(anchored_events(anvil, contract)) == 1


@sqlite_only
def test_a_stuck_anchor_is_replaced_with_higher_fees(anvil, tx_signer, merkle_log, store, signer):
    anvil.fund(tx_signer.address)
    contract = deploy(anvil.url, anvil.chain_id, signer=tx_signer)
    anvil.rpc("evm_setAutomine", False)
    backend = make_evm(anvil.url, anvil.chain_id, contract, signer=tx_signer)
    backend.replace_after = 0.5
    runner = anchorer(merkle_log, store, backend, signer)
    append(merkle_log, 2)
    stuck = runner.run_once().new
    assert stuck.status == "sent"
    time.sleep(1.1)
    runner.run_once()
    replaced = store.get(backend.target, 2)
    assert replaced.tx_hash != stuck.tx_hash and replaced.nonce == stuck.nonce and replaced.attempts == 2
    old, new = json.loads(stuck.tx_fields), json.loads(replaced.tx_fields)
    assert new["maxFeePerGas"] > old["maxFeePerGas"] and new["maxPriorityFeePerGas"] > old["maxPriorityFeePerGas"]
    anvil.rpc("evm_mine")
    runner.run_once()
    record = store.get(backend.target, 2)
    assert record.status == "confirmed" and record.tx_hash == replaced.tx_hash
    assert len(anchored_events(anvil, contract)) == 1
