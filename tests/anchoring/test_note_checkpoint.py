"""C2SP signed notes, verifier/signer keys, checkpoints and tlog-proofs: round trips and rejections."""

from __future__ import annotations

import base64
import os

import pytest

from anchoring import merkle
from anchoring.checkpoint import (
    Checkpoint,
    format_tlog_proof,
    open_checkpoint,
    parse_checkpoint_body,
    parse_tlog_proof,
    verify_tlog_proof_for_entry,
)
from anchoring.errors import KeyFileError, VerificationError
from anchoring.note import (
    Signer,
    open_note,
    parse_signer_key,
    parse_verifier_key,
    read_key_file,
    sign_note,
    write_key_file,
)

ORIGIN = "test.example/log"


@pytest.fixture
def signed(signer):
    checkpoint = Checkpoint(ORIGIN, 3, merkle.root_from_leaf_hashes([merkle.leaf_hash(b) for b in (b"a", b"b", b"c")]))
    return checkpoint, sign_note(checkpoint.body(), signer)


def test_key_strings_round_trip_and_the_key_id_is_checked(signer):
    vkey = signer.verifier.vkey
    name, key_id, data = vkey.split("+", 2)
    assert name == ORIGIN and len(key_id) == 8 and base64.b64decode(data)[0] == 1
    assert parse_verifier_key(vkey) == signer.verifier
    assert parse_signer_key(signer.skey).verifier == signer.verifier
    wrong_id = f"{name}+{(int(key_id, 16) ^ 1):08x}+{data}"
    with pytest.raises(VerificationError, match="expected key id"):
        parse_verifier_key(wrong_id)
    with pytest.raises(VerificationError, match="spaces"):
        Signer.generate("has space")
    assert "PRIVATE" not in repr(signer) and signer.skey.split("+")[-1] not in repr(signer)


def test_checkpoint_note_round_trip(signer, signed):
    checkpoint, note = signed
    assert note.startswith(f"{ORIGIN}\n3\n")
    assert "\n\n\u2014 test.example/log " in note
    assert open_checkpoint(note, [signer.verifier]) == checkpoint
    assert open_note(note, [signer.verifier]).verified_by == (ORIGIN,)


def test_a_changed_byte_anywhere_in_the_body_is_rejected(signer, signed):
    _, note = signed
    body_end = note.index("\n\n")
    for at in range(body_end):
        changed = note[:at] + ("X" if note[at] != "X" else "Y") + note[at + 1 :]
        with pytest.raises(VerificationError):
            open_checkpoint(changed, [signer.verifier])


def test_a_bad_signature_is_rejected(signer, signed):
    _, note = signed
    line_start = note.rindex("\u2014")
    name, sig = note[line_start + 2 :].split(" ")
    raw = bytearray(base64.b64decode(sig))
    raw[10] ^= 1
    forged = note[:line_start] + f"\u2014 {name} {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(VerificationError, match="invalid one"):
        open_checkpoint(forged, [signer.verifier])


def test_an_unknown_key_is_rejected(signed):
    _, note = signed
    other = Signer.generate(ORIGIN)
    with pytest.raises(VerificationError, match="expected a signature by a known key"):
        open_checkpoint(note, [other.verifier])


def test_a_wrong_origin_is_rejected(signer):
    note = sign_note(Checkpoint("other.example/log", 1, merkle.leaf_hash(b"")).body(), signer)
    with pytest.raises(VerificationError, match="expected 'test.example/log', found 'other.example/log'"):
        open_checkpoint(note, [signer.verifier])
    assert open_checkpoint(note, [signer.verifier], origin="other.example/log").size == 1


@pytest.mark.parametrize(
    "text, message",
    [
        ("origin\n3\n", "expected origin, size and root"),
        ("origin\n03\n" + base64.b64encode(bytes(32)).decode() + "\n", "leading zeros"),
        ("origin\n-3\n" + base64.b64encode(bytes(32)).decode() + "\n", "decimal"),
        ("origin\n3\n" + base64.b64encode(bytes(31)).decode() + "\n", "32 bytes, found 31"),
        ("origin\n3\nnot base64!\n", "base64"),
        ("\n3\n" + base64.b64encode(bytes(32)).decode() + "\n", "non-empty origin"),
        ("origin\n3\n" + base64.b64encode(bytes(32)).decode(), "end with a newline"),
    ],
)
def test_malformed_checkpoint_bodies_are_rejected(text, message):
    with pytest.raises(VerificationError, match=message):
        parse_checkpoint_body(text)


@pytest.mark.parametrize(
    "note, message",
    [
        ("body\n", "no blank line"),
        ("body\n\n- name sig\n", "expected '— <name> <signature>'"),
        ("body\n\n\u2014 name !!!\n", "base64"),
        ("body\n\n\u2014 name AAAA\n", "key id and a signature"),
        ("body\n\n\u2014 name " + base64.b64encode(bytes(68)).decode(), "end with a newline"),
        (b"\xff\xfe\n\n", "UTF-8"),
    ],
)
def test_malformed_notes_are_rejected(signer, note, message):
    with pytest.raises(VerificationError, match=message):
        open_note(note, [signer.verifier])


def test_tlog_proof_round_trip_and_entry_check(signer, signed):
    checkpoint, note = signed
    leaves = [merkle.leaf_hash(b) for b in (b"a", b"b", b"c")]
    proof = [leaves[0], leaves[2]]  # index 1 in a 3-leaf tree: sibling leaf, then the right subtree
    text = format_tlog_proof(1, proof, note, extra=b"context")
    assert text.startswith("c2sp.org/tlog-proof@v1\nextra Y29udGV4dA==\nindex 1\n")
    parsed = parse_tlog_proof(text)
    assert (parsed.index, list(parsed.hashes), parsed.checkpoint, parsed.extra) == (1, proof, note, b"context")
    verify_tlog_proof_for_entry(text, b"b", [signer.verifier])
    with pytest.raises(VerificationError, match="expected root"):
        verify_tlog_proof_for_entry(text, b"a", [signer.verifier])
    with pytest.raises(VerificationError, match="expected a signature by a known key"):
        verify_tlog_proof_for_entry(text, b"b", [Signer.generate(ORIGIN).verifier])


@pytest.mark.parametrize(
    "text, message",
    [
        ("c2sp.org/tlog-proof@v2\nindex 0\n\nx", "first line"),
        ("c2sp.org/tlog-proof@v1\nindx 0\n\nx", "'index N'"),
        ("c2sp.org/tlog-proof@v1\nindex 01\n\nx", "leading zeros"),
        ("c2sp.org/tlog-proof@v1\nindex 0\nAAAA\n\nx", "32 bytes"),
        ("c2sp.org/tlog-proof@v1\nindex 0", "blank line"),
    ],
)
def test_malformed_tlog_proofs_are_rejected(text, message):
    with pytest.raises(VerificationError, match=message):
        parse_tlog_proof(text)


def test_key_file_is_owner_only_and_never_overwritten_silently(tmp_path, signer):
    path = tmp_path / "keys" / "log.key"
    write_key_file(path, signer)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert read_key_file(path).verifier == signer.verifier
    with pytest.raises(KeyFileError, match="--force"):
        write_key_file(path, Signer.generate(ORIGIN))
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        read_key_file(path)
    with pytest.raises(KeyFileError, match="fhir-bridge keygen"):
        read_key_file(tmp_path / "missing.key")
