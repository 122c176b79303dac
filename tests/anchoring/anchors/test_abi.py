"""ABI encoding, constants and fees: pure functions, checked against independent implementations
(eth-utils' Keccak-256, eth-abi) so the hand-written encoder cannot drift."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anchoring.anchors import abi
from anchoring.anchors.artifact import load_artifact
from anchoring.anchors.fees import (
    GWEI,
    Fees,
    eip1559_fees,
    legacy_fees,
    replacement_fees,
    rpc_transaction,
    transaction_fields,
    with_margin,
)
from anchoring.anchors.rpc import RpcClient, backoff_delays, redact_url
from anchoring.errors import AnchorError, AnchorVerificationError

keccak = pytest.importorskip("eth_utils", reason="pip install eth-utils (the test extra)").keccak
eth_abi = pytest.importorskip("eth_abi", reason="pip install eth-abi (comes with eth-account)")


def test_constants_are_the_keccak_of_their_signatures():
    assert abi.ANCHOR_SELECTOR == keccak(text=abi.FUNCTION_SIGNATURE)[:4]
    assert abi.ANCHORED_TOPIC == keccak(text=abi.EVENT_SIGNATURE)
    assert abi.NOT_OPERATOR_SELECTOR == keccak(text="NotOperator(address)")[:4]
    assert abi.OPERATOR_SELECTOR == keccak(text="operator()")[:4]


def test_signatures_match_the_committed_abi():
    entries = {e.get("name"): e for e in load_artifact()["abi"]}

    def signature(entry: dict) -> str:
        return f"{entry['name']}({','.join(i['type'] for i in entry['inputs'])})"

    assert signature(entries["anchor"]) == abi.FUNCTION_SIGNATURE
    assert signature(entries["Anchored"]) == abi.EVENT_SIGNATURE
    assert [i["indexed"] for i in entries["Anchored"]["inputs"]] == [True, True, False, False]


@given(st.text(min_size=1, max_size=200), st.integers(0, 2**64 - 1), st.binary(min_size=32, max_size=32))
def test_anchor_call_round_trip_and_matches_eth_abi(origin, size, root):
    data = abi.encode_anchor_call(origin, size, root)
    assert data[4:] == eth_abi.encode(["string", "uint64", "bytes32"], [origin, size, root])
    assert abi.decode_anchor_call(data) == (origin, size, root)


@given(st.text(max_size=200), st.binary(min_size=32, max_size=32), st.integers(0, 2**64 - 1))
def test_event_decoding(origin, root, size):
    data = abi.encode_event_data(root, origin)
    assert data == eth_abi.encode(["bytes32", "string"], [root, origin])
    log = {"address": "0xAB" + "00" * 19, "topics": ["0x" + abi.ANCHORED_TOPIC.hex(),
                                                      "0x" + abi.origin_hash(origin).hex(),
                                                      "0x" + abi.encode_size_topic(size).hex()],
           "data": "0x" + data.hex(), "blockNumber": "0x10", "blockHash": "0x" + "cd" * 32,
           "transactionHash": "0x" + "ef" * 32, "logIndex": "0x0"}
    event = abi.decode_anchored_log(log)
    assert (event.origin, event.size, event.root, event.block_number) == (origin, size, root, 16)
    assert event.contract == "0xab" + "00" * 19


@pytest.mark.parametrize("mutate, message", [
    (lambda log: log.update(topics=log["topics"][:2]), "expected an Anchored event"),
    (lambda log: log.update(topics=["0x" + "00" * 32, *log["topics"][1:]]), "expected an Anchored event"),
    (lambda log: log.update(data=log["data"][:130]), "expected at least 96 bytes"),
    (lambda log: log.update(data=log["data"][:-64]), "string bytes"),
])
def test_malformed_events_are_rejected(mutate, message):
    log = {"address": "0x" + "00" * 20, "topics": ["0x" + abi.ANCHORED_TOPIC.hex(), "0x" + "00" * 32,
                                                    "0x" + abi.encode_size_topic(1).hex()],
           "data": "0x" + abi.encode_event_data(b"\x01" * 32, "x" * 40).hex(), "blockNumber": "0x1",
           "blockHash": "0x00", "transactionHash": "0x00", "logIndex": "0x0"}
    mutate(log)
    with pytest.raises(AnchorVerificationError, match=message):
        abi.decode_anchored_log(log)


def test_bad_arguments():
    with pytest.raises(ValueError):
        abi.encode_anchor_call("o", 2**64, bytes(32))
    with pytest.raises(ValueError):
        abi.encode_anchor_call("o", 1, bytes(31))
    with pytest.raises(AnchorVerificationError, match="expected anchor"):
        abi.decode_anchor_call(b"\x00" * 200)


def test_fees():
    fees = eip1559_fees(10 * GWEI, 2 * GWEI)
    assert (fees.max_fee_per_gas, fees.max_priority_fee_per_gas) == (22 * GWEI, 2 * GWEI)
    capped = eip1559_fees(10 * GWEI, 2 * GWEI, cap=15 * GWEI)
    assert capped.max_fee_per_gas == 15 * GWEI
    with pytest.raises(AnchorError, match="exceed the cap"):
        eip1559_fees(10 * GWEI, 2 * GWEI, cap=11 * GWEI)
    assert legacy_fees(3).gas_price == 3
    assert with_margin(26_000) == 31_200
    tx = transaction_fields(1, 7, "0xab", b"\x01", 30_000, fees)
    assert tx["type"] == 2 and tx["maxFeePerGas"] == 22 * GWEI and tx["data"] == "0x01"
    assert "to" not in transaction_fields(1, 0, None, b"", 1, fees)
    assert rpc_transaction(tx, "0xcd") == {"from": "0xcd", "chainId": "0x1", "nonce": "0x7", "to": "0xab",
                                           "value": "0x0", "gas": hex(30_000), "data": "0x01", "type": "0x2",
                                           "maxFeePerGas": hex(22 * GWEI), "maxPriorityFeePerGas": hex(2 * GWEI)}
    assert "gasPrice" in transaction_fields(1, 0, "0xab", b"", 1, legacy_fees(5))


def test_replacement_fees_raise_every_fee_by_an_eighth():
    old = {"maxFeePerGas": 80 * GWEI, "maxPriorityFeePerGas": 8 * GWEI}
    quiet = replacement_fees(old, Fees(30 * GWEI, 1 * GWEI))
    assert quiet.max_fee_per_gas == 90 * GWEI + 1 and quiet.max_priority_fee_per_gas == 9 * GWEI + 1
    busy = replacement_fees(old, Fees(200 * GWEI, 20 * GWEI))
    assert (busy.max_fee_per_gas, busy.max_priority_fee_per_gas) == (200 * GWEI, 20 * GWEI)
    assert replacement_fees({"gasPrice": 8}, legacy_fees(1)).gas_price == 10
    with pytest.raises(AnchorError, match="replacing a stuck anchor"):
        replacement_fees(old, Fees(30 * GWEI, 1 * GWEI), cap=85 * GWEI)


def test_rpc_retries_with_backoff_and_redacts_the_url():
    delays: list[float] = []
    client = RpcClient("http://user:secret@127.0.0.1:9/v3/apikey", retries=3, backoff=0.5, max_backoff=1.0,
                       sleep=delays.append)
    with pytest.raises(AnchorError) as caught:
        client.chain_id()
    assert delays == [0.5, 1.0, 1.0] == backoff_delays(3, 0.5, 1.0)
    message = str(caught.value)
    assert "check anchor_rpc_url" in message and "secret" not in message and "apikey" not in message
    assert redact_url("https://key@host.example:8545/path?k=v") == "https://host.example:8545"


def test_artifact_is_json_with_bytecode():
    artifact = load_artifact()
    assert artifact["evmVersion"] == "shanghai"
    assert artifact["bytecode"].startswith("0x60") and json.dumps(artifact)
