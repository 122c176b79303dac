"""`fhir-bridge verify --rpc`: the Bundle's checkpoint is looked up on a real chain (anvil)."""

from __future__ import annotations

import secrets

import pytest

from anchoring.anchors.anchorer import Anchorer
from anchoring.anchors.store import AnchorStore
from bridge.anchor_signing import LocalTransactionSigner
from bridge.api import create_app
from bridge.cli import main
from bridge.services import open_services

from ..anchoring.anchors.conftest import deploy, make_evm
from ..anchoring.anchors.nodes import Anvil
from .fhir_support import bearer, consent, put, seed, settle


@pytest.fixture
def anvil():
    node = Anvil().start()
    yield node
    node.stop()


def test_verify_checks_the_anchor_on_chain(tmp_path, config, signer, anvil, capsys):
    services = open_services(config)
    services._signer = signer
    try:
        seed(services)
        put(services, consent("cons-p1", "p1", "org-a"))
        settle(services)
        sender = LocalTransactionSigner(secrets.token_hex(32))
        anvil.fund(sender.address)
        contract = deploy(anvil.url, anvil.chain_id, signer=sender)
        store = AnchorStore(services.db)
        store.ensure_schema()
        runner = Anchorer(services.log, store, make_evm(anvil.url, anvil.chain_id, contract, signer=sender), signer)
        runner.run_once()
        anvil.rpc("evm_mine")
        runner.run_once()
        client = create_app(services=services).test_client()
        data = client.get("/fhir/Patient/p1/$everything", headers=bearer(services, "org-a")).get_data()
    finally:
        services.close()
    path = tmp_path / "bundle.json"
    path.write_bytes(data)
    vkey = signer.verifier.vkey
    assert main(["verify", str(path), "--key", vkey, "--rpc", anvil.url]) == 0
    out = capsys.readouterr().out
    assert "anchor: OK" in out and contract.lower() in out.lower()

    other = Anvil(chain_id=31338).start()  # same origin and size, but never anchored there
    try:
        assert main(["verify", str(path), "--key", vkey, "--rpc", other.url]) == 1
        assert "anchor: FAIL" in capsys.readouterr().out
    finally:
        other.stop()
