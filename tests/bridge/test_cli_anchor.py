"""End to end through the command line and the API, against a real anvil node:
entries appended -> checkpoint -> anchored -> `anchor verify` passes; an altered stored
checkpoint, another contract or another chain make it fail, saying which."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from pathlib import Path

import pytest

from anchoring.checkpoint import Checkpoint
from anchoring.note import read_key_file, sign_note
from bridge.anchor_signing import LocalTransactionSigner
from bridge.api import create_app
from bridge.cli import main
from bridge.config import load_config
from tests.anchoring.anchors.nodes import Anvil

ORIGIN = "hospital.example/log"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def bridge_env(tmp_path: Path, monkeypatch, capsys):
    data = tmp_path / "data"
    monkeypatch.setenv("FHIR_BRIDGE_DATA_DIR", str(data))
    monkeypatch.setenv("FHIR_BRIDGE_LOG_ORIGIN", ORIGIN)
    for name in list(os.environ):
        if name.startswith("FHIR_BRIDGE_ANCHOR"):
            monkeypatch.delenv(name)
    assert run(capsys, "keygen")[0] == 0
    return data


def _append(capsys, tmp_path: Path, n: int) -> None:
    files = []
    for i in range(n):
        f = tmp_path / f"entry{i}-{secrets.token_hex(2)}.json"
        f.write_text(json.dumps({"resourceType": "Patient", "id": str(i)}))
        files.append(str(f))
    assert run(capsys, "log", "append", *files)[0] == 0


def test_local_backend_end_to_end(bridge_env, tmp_path, capsys):
    _append(capsys, tmp_path, 3)
    code, out, err = run(capsys, "anchor", "now")
    assert code == 0 and json.loads(out)["status"] == "confirmed"
    code, out, err = run(capsys, "anchor", "verify", "latest")
    assert code == 0 and "no external trust" in err
    assert (bridge_env / "anchor-journal.jsonl").exists()


def test_evm_end_to_end(bridge_env, tmp_path, capsys, monkeypatch):
    node = Anvil().start()
    other_chain = None
    try:
        key = secrets.token_hex(32)
        key_file = bridge_env / "anchor.key"
        key_file.write_text(key + "\n")
        key_file.chmod(0o644)
        monkeypatch.setenv("FHIR_BRIDGE_ANCHOR_BACKEND", "evm")
        monkeypatch.setenv("FHIR_BRIDGE_ANCHOR_RPC_URL", node.url)
        monkeypatch.setenv("FHIR_BRIDGE_ANCHOR_CHAIN_ID", str(node.chain_id))
        monkeypatch.setenv("FHIR_BRIDGE_ANCHOR_KEY_FILE", "anchor.key")
        monkeypatch.setenv("FHIR_BRIDGE_ANCHOR_CONFIRMATIONS", "2")
        code, _, err = run(capsys, "anchor", "deploy")
        assert code == 2 and "chmod 600" in err  # a key file others can read is refused
        key_file.chmod(0o600)
        node.fund(LocalTransactionSigner(key).address)

        code, out, err = run(capsys, "anchor", "deploy")
        assert code == 0, err
        contract = json.loads(out)["contract"]
        assert f"FHIR_BRIDGE_ANCHOR_CONTRACT={contract}" in err
        monkeypatch.setenv("FHIR_BRIDGE_ANCHOR_CONTRACT", contract)

        _append(capsys, tmp_path, 4)
        code, out, err = run(capsys, "anchor", "now")
        assert code == 0, err
        first = json.loads(out)
        assert first["status"] == "included" and first["size"] == 4 and first["confirmations"] == 1
        node.rpc("evm_mine")
        code, out, err = run(capsys, "anchor", "now", "--wait", "10")
        assert code == 0 and json.loads(out)["status"] == "confirmed"
        assert "nothing new to anchor" in err

        code, out, err = run(capsys, "anchor", "verify", "latest")
        assert code == 0, err
        assert json.loads(out)["transaction_hash"] == first["transaction_hash"]
        assert f"chain {node.chain_id} contract {contract}" in err
        assert key not in out + err

        code, out, err = run(capsys, "anchor", "status")
        assert code == 0 and json.loads(out.splitlines()[0])["status"] == "confirmed"

        app = create_app(load_config())
        with app.test_client() as client:
            body = client.get("/log/anchors").get_json()
            [anchor] = body["anchors"]
            assert anchor["chain_id"] == node.chain_id and anchor["contract"] == contract
            assert anchor["transaction_hash"] == first["transaction_hash"]
            assert anchor["block_number"] == first["block_number"] and anchor["confirmations"] >= 2
            assert client.get("/log/anchors?size=4").status_code == 200
            assert client.get("/log/anchors?status=pending").get_json()["anchors"] == []
            assert client.get("/log/anchors?status=bogus").status_code == 400
            missing = client.get("/log/anchors?size=99")
            assert missing.status_code == 404 and missing.get_json()["resourceType"] == "OperationOutcome"
            assert client.get("/log/anchors?limit=x").status_code == 400

        # Pointing at another contract, or at another chain, fails and says which.
        code, out, _ = run(capsys, "anchor", "deploy")
        other_contract = json.loads(out)["contract"]
        code, _, err = run(capsys, "anchor", "verify", "latest", "--contract", other_contract)
        assert code == 1 and f"INVALID: contract: expected the anchor of '{ORIGIN}' size 4 in contract " \
                              f"{other_contract}, found it only in {contract}" in err
        other_chain = Anvil(chain_id=31338).start()
        code, _, err = run(capsys, "anchor", "verify", "latest", "--rpc-url", other_chain.url)
        assert code == 1 and "INVALID: chain: expected chain id 31337, found 31338" in err
        code, _, err = run(capsys, "anchor", "verify", "latest", "--chain-id", "1")
        assert code == 1 and "INVALID: chain: expected chain id 1, found 31337" in err

        # Altering the stored checkpoint: the row alone, then row and note re-signed by the operator.
        db = sqlite3.connect(bridge_env / "fhir-bridge.db")
        db.execute("UPDATE log_checkpoints SET root = ? WHERE size = 4", (b"\x07" * 32,))
        db.commit()
        code, _, err = run(capsys, "anchor", "verify", "4")
        assert code == 1 and "INVALID: stored checkpoint: the signed note says size 4" in err
        signer = read_key_file(bridge_env / "log-signing.key")
        rewritten = sign_note(Checkpoint(ORIGIN, 4, b"\x07" * 32).body(), signer)
        db.execute("UPDATE log_checkpoints SET note = ? WHERE size = 4", (rewritten,))
        db.commit()
        db.close()
        code, _, err = run(capsys, "anchor", "verify", "4")
        assert code == 1 and "INVALID: root: expected BwcH" in err and first["transaction_hash"] in err

        # A checkpoint file given by a partner is checked the same way.
        note_file = tmp_path / "checkpoint.txt"
        note_file.write_text(rewritten)
        code, _, err = run(capsys, "anchor", "verify", str(note_file))
        assert code == 1 and "INVALID: root:" in err
    finally:
        node.stop()
        if other_chain is not None:
            other_chain.stop()


def test_unconfigured_evm_says_what_to_do(bridge_env, capsys, monkeypatch):
    monkeypatch.setenv("FHIR_BRIDGE_ANCHOR_BACKEND", "evm")
    code, _, err = run(capsys, "anchor", "now")
    assert code == 2 and "anchor_rpc_url is not set" in err
    monkeypatch.setenv("FHIR_BRIDGE_ANCHOR_RPC_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("FHIR_BRIDGE_ANCHOR_CHAIN_ID", "5")
    code, _, err = run(capsys, "anchor", "now")
    assert code == 2 and "anchor deploy" in err
    monkeypatch.setenv("FHIR_BRIDGE_ANCHOR_BACKEND", "ipfs")
    code, _, err = run(capsys, "anchor", "status")
    assert code == 2 and "expected 'local' or 'evm'" in err
