"""Fixtures for the anchor tests: real nodes, a funded signing account, a log with entries."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from anchoring.anchors.anchorer import Anchorer
from anchoring.anchors.evm import EvmBackend
from anchoring.anchors.rpc import RpcClient
from anchoring.anchors.store import AnchorStore
from anchoring.log import MerkleLog
from anchoring.note import Signer
from bridge.anchor_signing import LocalTransactionSigner

from .nodes import Anvil, EthTesterRpc

ORIGIN = "test.example/log"


@pytest.fixture
def anvil():
    node = Anvil().start()
    yield node
    node.stop()


@pytest.fixture
def eth_tester_node():
    pytest.importorskip("eth_tester", reason="pip install 'eth-tester[py-evm]' (the test extra)")
    node = EthTesterRpc().start()
    yield node
    node.stop()


@pytest.fixture
def tx_signer() -> LocalTransactionSigner:
    """A fresh secp256k1 key for each test: nothing well-known is ever used to sign."""
    return LocalTransactionSigner(secrets.token_hex(32))


@pytest.fixture
def merkle_log(db, signer: Signer) -> MerkleLog:
    log = MerkleLog(db, ORIGIN)
    log.ensure_schema()
    return log


@pytest.fixture
def store(db) -> AnchorStore:
    s = AnchorStore(db)
    s.ensure_schema()
    return s


def make_evm(url: str, chain_id: int, contract: str | None, signer=None, sender=None, confirmations: int = 1,
             retries: int = 2) -> EvmBackend:
    return EvmBackend(RpcClient(url, retries=retries, backoff=0.05, max_backoff=0.2), chain_id, contract,
                      confirmations=confirmations, signer=signer, sender=sender)


def deploy(url: str, chain_id: int, signer=None, sender=None) -> str:
    backend = make_evm(url, chain_id, None, signer=signer, sender=sender)
    address, _, _ = backend.deploy(timeout=30, poll=0.1)
    backend.close()
    return address


def append(log: MerkleLog, n: int, tag: str = "e") -> None:
    log.append(f"{tag}{i}".encode() for i in range(n))


def anchorer(log: MerkleLog, store: AnchorStore, backend, signer: Signer) -> Anchorer:
    return Anchorer(log, store, backend, signer)


@pytest.fixture
def tmp_state(tmp_path: Path) -> Path:
    return tmp_path / "anvil-state.json"
