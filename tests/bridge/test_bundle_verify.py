"""Bundles from the API verify offline with `fhir-bridge verify`; any changed byte of an entry's
resource, salt or proof, or of the checkpoint, fails verification and names the entry."""

from __future__ import annotations

import base64
import json
import random

import pytest

from anchoring.bundle_verify import EXT_CHECKPOINT, EXT_PROOF, EXT_SALT, verify_bundle
from anchoring.jcs import canonicalize
from anchoring.note import parse_verifier_key
from bridge.api import create_app
from bridge.cli import main
from bridge.services import open_services

from .fhir_support import bearer, consent, put, seed, settle


@pytest.fixture
def fetched(tmp_path, config, signer):
    services = open_services(config)
    services._signer = signer
    seed(services)
    put(services, consent("cons-p1", "p1", "org-a"), consent("cons-p2", "p2", "org-a"))
    settle(services)
    client = create_app(services=services).test_client()
    headers = bearer(services, "org-a")
    bundles = {}
    for name, url in [("everything", "/fhir/Patient/p1/$everything"),
                      ("search", "/fhir/Observation?code=2345-7&_include=Observation:patient"),
                      ("history", "/fhir/Observation/o1/_history")]:
        response = client.get(url, headers=headers)
        assert response.status_code == 200
        bundles[name] = response.get_data()
    yield bundles, signer.verifier.vkey, services, client, headers
    services.close()


def _verify(tmp_path, data: bytes, vkey: str, capsys, *extra: str) -> tuple[int, str]:
    path = tmp_path / "bundle.json"
    path.write_bytes(data)
    code = main(["verify", str(path), "--key", vkey, *extra])
    return code, capsys.readouterr().out


def test_bundles_from_the_api_verify(tmp_path, fetched, capsys):
    bundles, vkey, *_ = fetched
    for name, data in bundles.items():
        code, out = _verify(tmp_path, data, vkey, capsys)
        assert code == 0, (name, out)
        count = len(json.loads(data)["entry"])
        assert f"{count} of {count} entries verified" in out and "FAIL" not in out
    # The resource a partner receives re-canonicalises to exactly the stored bytes.
    entry = json.loads(bundles["everything"])["entry"][0]
    assert canonicalize(entry["resource"]) in bundles["everything"]


def test_wrong_key_and_unproven_entries_fail(tmp_path, fetched, capsys):
    bundles, vkey, services, client, headers = fetched
    from anchoring.note import Signer

    other = Signer.generate("test.example/log").verifier.vkey
    code, out = _verify(tmp_path, bundles["search"], other, capsys)
    assert code == 1 and "checkpoint: FAIL" in out
    put(services, {"resourceType": "Observation", "id": "o9", "status": "final", "code": {"text": "new"},
                   "subject": {"reference": "Patient/p1"}})  # stored, not yet in a checkpoint
    late = client.get("/fhir/Observation?_id=o9", headers=headers).get_data()
    code, out = _verify(tmp_path, late, vkey, capsys)
    assert code == 1 and "not yet provable" in out
    code, out = _verify(tmp_path, bundles["search"], vkey, capsys, "--rpc", "http://127.0.0.1:9")
    assert code == 1 and "anchor: FAIL" in out, "--rpc needs an EVM anchor reference to check"


def _regions(data: bytes) -> list[tuple[str, int | None, int, int]]:
    """(what, entry position or None for the Bundle's checkpoint, start, end) byte ranges to corrupt."""
    bundle = json.loads(data)
    out = []

    def locate(what: str, position: int | None, needle: bytes) -> None:
        start = data.find(needle)
        assert start >= 0, what
        out.append((what, position, start, start + len(needle)))

    def ext(holder: dict, url: str, kind: str) -> str:
        return next(e[kind] for e in holder["extension"] if e["url"] == url)

    for i, entry in enumerate(bundle["entry"]):
        locate("resource", i, canonicalize(entry["resource"]))
        locate("salt", i, ext(entry, EXT_SALT, "valueBase64Binary").encode())
        proof = json.dumps(ext(entry, EXT_PROOF, "valueString"), ensure_ascii=False)[1:-1].encode()
        head = proof.split(b"\\n\\n", 1)[0]  # the proof's own lines; its checkpoint copy is tested below
        locate("proof", i, head)
    note = json.dumps(ext(bundle["meta"], EXT_CHECKPOINT, "valueString"), ensure_ascii=False)[1:-1].encode()
    locate("checkpoint", None, note)
    return out


def _flip(data: bytes, at: int) -> bytes | None:
    """``data`` with the byte at ``at`` changed so that it is still JSON, or None if no change is."""
    for candidate in (data[at] ^ 1, data[at] ^ 2, ord("A"), ord("0"), ord("x")):
        if candidate == data[at]:
            continue
        changed = data[:at] + bytes([candidate]) + data[at + 1 :]
        try:
            json.loads(changed)
        except (ValueError, UnicodeDecodeError):
            continue
        return changed
    return None


def test_changing_any_byte_fails_and_names_the_entry(tmp_path, fetched, capsys):
    bundles, vkey, *_ = fetched
    verifiers = [parse_verifier_key(vkey)]
    rng = random.Random(8785)
    tried = 0
    for name, data in bundles.items():
        entries = len(json.loads(data)["entry"])
        for what, position, start, end in _regions(data):
            positions = range(start, end) if what == "salt" else rng.sample(range(start, end), min(25, end - start))
            for at in positions:
                changed = _flip(data, at)
                if changed is None:
                    continue
                tried += 1
                report = verify_bundle(json.loads(changed), verifiers)
                failed = [e.position for e in report.entries if not e.ok]
                expected = list(range(entries)) if position is None else [position]
                assert failed == expected, (name, what, position, at, data[at - 10 : at + 10])
                assert not report.ok
        # And once through the command line: exit status 1, the entry's row says FAIL.
        what, position, start, _ = next(r for r in _regions(data) if r[0] == "salt")
        code, out = _verify(tmp_path, _flip(data, start + 3), vkey, capsys)
        row = next(line for line in out.splitlines() if line.startswith(f"{position} "))
        assert code == 1 and "FAIL" in row and "VERIFICATION FAILED" in out
    assert tried > 300


def test_a_salt_of_another_version_fails(fetched):
    bundles, vkey, *_ = fetched
    bundle = json.loads(bundles["history"])
    first, second = bundle["entry"]
    salts = [next(e for e in x["extension"] if e["url"] == EXT_SALT) for x in (first, second)]
    salts[0]["valueBase64Binary"], salts[1]["valueBase64Binary"] = salts[1]["valueBase64Binary"], \
        salts[0]["valueBase64Binary"]
    report = verify_bundle(bundle, [parse_verifier_key(vkey)])
    assert [e.ok for e in report.entries] == [False, False]
    assert base64.b64decode(salts[0]["valueBase64Binary"])  # still well-formed: only the hash tells
