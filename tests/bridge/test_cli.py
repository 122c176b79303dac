"""The `fhir-bridge` command line for the log: keygen, append, checkpoint, prove, consistency, verify-proof."""

from __future__ import annotations

import base64
import json
import os

import pytest

from anchoring import merkle
from anchoring.checkpoint import open_checkpoint
from anchoring.note import parse_verifier_key
from bridge.cli import main
from bridge.config import load_config


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys, database_url):
    monkeypatch.setenv("FHIR_BRIDGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FHIR_BRIDGE_DATABASE_URL", database_url)
    monkeypatch.setenv("FHIR_BRIDGE_LOG_ORIGIN", "cli.example/log")

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def files(tmp_path):
    paths = []
    for i in range(11):
        path = tmp_path / f"entry{i}.json"
        path.write_bytes(json.dumps({"n": i, "pad": "x" * i}).encode())
        paths.append(path)
    return paths


def test_keygen_writes_an_owner_only_key_and_refuses_to_overwrite(cli, tmp_path):
    code, out, err = cli("keygen")
    assert code == 0
    vkey = parse_verifier_key(out.strip())
    assert vkey.name == "cli.example/log"
    key_file = tmp_path / "data" / "log-signing.key"
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    assert "PRIVATE" not in out + err
    code, _, err = cli("keygen")
    assert code == 2 and "--force" in err
    assert cli("keygen", "--force")[0] == 0


def test_append_prove_and_verify_round_trip(cli, files, tmp_path):
    vkey = cli("keygen")[1].strip()
    code, out, _ = cli("log", "append", *map(str, files))
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [x["index"] for x in lines] == list(range(11))
    assert lines[3]["leaf_hash"] == merkle.leaf_hash(files[3].read_bytes()).hex()

    code, note, _ = cli("log", "checkpoint")
    checkpoint = open_checkpoint(note, [parse_verifier_key(vkey)])
    assert checkpoint.size == 11

    proof_file = tmp_path / "p.tlog-proof"
    code, proof, _ = cli("log", "prove", "7")
    proof_file.write_text(proof)
    assert cli("verify-proof", str(proof_file), "--entry", str(files[7]), "--key", vkey)[0] == 0
    code, _, err = cli("verify-proof", str(proof_file), "--entry", str(files[6]), "--key", vkey)
    assert code == 1 and "INVALID" in err and "expected root" in err
    other_key = tmp_path / "other.vkey"
    other_key.write_text(vkey.replace("cli.example/log", "other.example/log", 1))
    assert cli("verify-proof", str(proof_file), "--entry", str(files[7]), "--key", str(other_key))[0] == 1
    tampered = tmp_path / "t.tlog-proof"
    tampered.write_text(proof.replace("index 7", "index 6"))
    assert cli("verify-proof", str(tampered), "--entry", str(files[7]), "--key", vkey)[0] == 1

    # A proof against an earlier size carries a checkpoint of that size.
    code, proof5, _ = cli("log", "prove", "2", "--size", "5")
    proof_file.write_text(proof5)
    assert "\n5\n" in proof5
    assert cli("verify-proof", str(proof_file), "--entry", str(files[2]), "--key", vkey)[0] == 0


def test_consistency_proof_verifies_between_checkpoints(cli, files, tmp_path):
    vkey = parse_verifier_key(cli("keygen")[1].strip())
    cli("log", "append", *map(str, files[:5]))
    old = open_checkpoint(cli("log", "checkpoint")[1], [vkey])
    cli("log", "append", *map(str, files[5:]))
    new = open_checkpoint(cli("log", "checkpoint")[1], [vkey])
    code, out, _ = cli("log", "consistency", "5", "11")
    proof = [base64.b64decode(line) for line in out.split()]
    merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)


def test_errors_say_what_to_do(cli, files):
    code, _, err = cli("log", "checkpoint")
    assert code == 2 and "fhir-bridge keygen" in err
    cli("log", "append", str(files[0]))
    code, _, err = cli("log", "consistency", "1", "9")
    assert code == 2 and "outside the log" in err
    code, _, err = cli("log", "append", "/nonexistent/file")
    assert code == 2 and "cannot read /nonexistent/file" in err


def test_configuration_precedence(tmp_path):
    path = tmp_path / "bridge.toml"
    path.write_text('log_origin = "file.example/log"\nport = 9000\n')
    config = load_config(path, env={"FHIR_BRIDGE_PORT": "9100"})
    assert (config.log_origin, config.port) == ("file.example/log", 9100)
    assert load_config(path, env={}, port=9200).port == 9200
    path.write_text('colour = "blue"\n')
    with pytest.raises(Exception, match="unknown settings colour"):
        load_config(path, env={})
    with pytest.raises(Exception, match="port"):
        load_config(env={"FHIR_BRIDGE_PORT": "eighty"})
