"""Interoperability with an independent implementation: Go's golang.org/x/mod/sumdb/note and tlog.

The CLI builds a real log (keygen, append, checkpoint, prove, consistency) in a temporary data
directory; a small Go program (``gocheck/main.go``, built here offline against the Debian package
golang-golang-x-mod-dev) must accept its verifier key, signed checkpoints, inclusion proofs and
consistency proofs, and must reject them once an entry, a checkpoint byte or the key is wrong.
In the other direction, a key made by Go's note.GenerateKey must load here, and notes signed on
either side must open on the other.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from anchoring.errors import VerificationError
from anchoring.merkle import leaf_hash, root_from_leaf_hashes
from anchoring.note import open_note, parse_signer_key, parse_verifier_key, sign_note, write_key_file

from ..components import find_executable, missing

HERE = Path(__file__).resolve().parent
GOCHECK_SOURCE = HERE / "gocheck" / "main.go"
GOPATH = Path("/usr/share/gocode")  # where golang-golang-x-mod-dev installs its sources
ORIGIN = "go-interop.example/log"
#: entries appended per `fhir-bridge log append`; a checkpoint is signed after each batch, so
#: the checkpoints are at sizes 1, 3, 7, 13, 23 and 40 (mostly not powers of two)
BATCHES = (1, 2, 4, 6, 10, 17)
SIZES = tuple(sum(BATCHES[: i + 1]) for i in range(len(BATCHES)))

GO_OK, GO_REJECTED = 0, 1
# Go's reasons (tlog's errProofFailed, note.InvalidSignatureError, note.UnverifiedNoteError)
BAD_PROOF = "invalid transparency proof"
BAD_SIGNATURE = "invalid signature for key"
UNKNOWN_KEY = "note has no verifiable signatures"


# ---------------------------------------------------------------------------------------------
# The two programs under test: Go's checker and our CLI
# ---------------------------------------------------------------------------------------------


class GoCheck:
    def __init__(self, binary: Path) -> None:
        self.binary = binary

    def run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.binary), *map(str, args)], capture_output=True, text=True, timeout=30)

    def accepts(self, *args: str | Path) -> str:
        """Run a check that must pass; return its output."""
        result = self.run(*args)
        assert result.returncode == GO_OK, f"Go rejected {args[:1]}: {result.stderr.strip()}"
        return result.stdout.rstrip("\n")

    def rejects(self, reason: str, *args: str | Path) -> None:
        """Run a check that must fail as a failed verification, for the given reason."""
        result = self.run(*args)
        assert result.returncode == GO_REJECTED, (
            f"Go was expected to reject {args[:1]} (exit {GO_REJECTED}), exit {result.returncode}: "
            f"{result.stdout.strip()} {result.stderr.strip()}"
        )
        assert reason in result.stderr, f"Go rejected {args[:1]} for another reason: {result.stderr.strip()}"


@pytest.fixture(scope="session")
def gocheck(tmp_path_factory: pytest.TempPathFactory) -> GoCheck:
    go = find_executable("go", ("/usr/lib/go-*/bin/go", "/usr/local/go/bin/go"))
    if go is None:
        missing("go", "apt-get install golang-go golang-golang-x-mod-dev")
    if not (GOPATH / "src/golang.org/x/mod/sumdb/note").is_dir():
        missing("golang.org/x/mod/sumdb (Go sources)", "apt-get install golang-golang-x-mod-dev")
    out = tmp_path_factory.mktemp("gocheck")
    env = {
        **os.environ,
        # GOPATH mode finds golang.org/x/mod in the Debian package's tree: no module download.
        "GOPATH": str(GOPATH),
        "GO111MODULE": "off",
        "GOPROXY": "off",
        "GOFLAGS": "",
        "GOENV": "off",
        "GOCACHE": str(out / "cache"),
        "CGO_ENABLED": "0",
    }
    binary = out / "gocheck"
    result = subprocess.run(
        [go, "build", "-o", str(binary), str(GOCHECK_SOURCE)],
        cwd=out, env=env, capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0:
        pytest.fail(f"building {GOCHECK_SOURCE} with {go} failed:\n{result.stderr}")
    return GoCheck(binary)


def _cli_command() -> list[str]:
    script = Path(sys.executable).with_name("fhir-bridge")
    if script.exists():
        return [str(script)]
    found = shutil.which("fhir-bridge")
    return [found] if found else [sys.executable, "-m", "bridge.cli"]


def fhir_bridge(data_dir: Path, *args: str | Path) -> str:
    """Run the CLI on ``data_dir`` (SQLite there, key there) and return its stdout; it must succeed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_BRIDGE_")}
    env.update(FHIR_BRIDGE_DATA_DIR=str(data_dir), FHIR_BRIDGE_LOG_ORIGIN=ORIGIN)
    result = subprocess.run(
        [*_cli_command(), *map(str, args)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"fhir-bridge {' '.join(map(str, args))} failed: {result.stderr.strip()}"
    return result.stdout


@dataclass
class BuiltLog:
    data_dir: Path
    vkey: str
    entries: list[Path]
    checkpoints: dict[int, Path]  # size -> file holding the signed checkpoint note
    work: Path

    def entry_bytes(self, index: int) -> bytes:
        return self.entries[index].read_bytes()

    def root(self, size: int) -> bytes:
        return root_from_leaf_hashes([leaf_hash(self.entry_bytes(i)) for i in range(size)])


def _entry_contents(rng: random.Random, index: int) -> bytes:
    """Varied entries: one empty, one large, the rest small binary and text."""
    if index == 5:
        return b""
    if index == 11:
        return rng.randbytes(70_000)
    if index % 3 == 0:
        return json.dumps({"resourceType": "Patient", "id": f"p{index}", "n": rng.random()}).encode()
    return rng.randbytes(rng.randint(1, 300))


@pytest.fixture(scope="module")
def built_log(tmp_path_factory: pytest.TempPathFactory) -> BuiltLog:
    root = tmp_path_factory.mktemp("go-interop")
    data_dir, entry_dir = root / "data", root / "entries"
    entry_dir.mkdir()
    vkey = fhir_bridge(data_dir, "keygen").strip()
    assert vkey.startswith(ORIGIN + "+")
    rng = random.Random(20261123)
    entries: list[Path] = []
    checkpoints: dict[int, Path] = {}
    for batch in BATCHES:
        files = []
        for _ in range(batch):
            path = entry_dir / f"entry-{len(entries) + len(files):03d}.bin"
            path.write_bytes(_entry_contents(rng, len(entries) + len(files)))
            files.append(path)
        lines = fhir_bridge(data_dir, "log", "append", *files).splitlines()
        reported = [json.loads(line) for line in lines]
        assert [r["index"] for r in reported] == list(range(len(entries), len(entries) + batch))
        assert [r["leaf_hash"] for r in reported] == [leaf_hash(f.read_bytes()).hex() for f in files]
        entries.extend(files)
        note = root / f"checkpoint-{len(entries)}.note"
        note.write_text(fhir_bridge(data_dir, "log", "checkpoint"))
        checkpoints[len(entries)] = note
    assert tuple(checkpoints) == SIZES
    return BuiltLog(data_dir, vkey, entries, checkpoints, root)


# ---------------------------------------------------------------------------------------------
# Tampering helpers: each returns a copy with exactly one thing wrong
# ---------------------------------------------------------------------------------------------


def _other_b64_char(ch: str) -> str:
    return "B" if ch == "A" else "A"


def alter_checkpoint_root(note: str) -> str:
    """Change one character of the root line (line 3) of the signed body."""
    lines = note.split("\n")
    lines[2] = _other_b64_char(lines[2][0]) + lines[2][1:]
    return "\n".join(lines)


def alter_checkpoint_size(note: str) -> str:
    lines = note.split("\n")
    lines[1] = str(int(lines[1]) + 1)
    return "\n".join(lines)


def alter_signature(note: str) -> str:
    """Change one byte of the Ed25519 signature (after the 4-byte key id)."""
    text, _, sig_line = note.rstrip("\n").rpartition("\n")
    prefix, _, b64 = sig_line.rpartition(" ")
    raw = bytearray(base64.b64decode(b64))
    raw[10] ^= 0x01
    return f"{text}\n{prefix} {base64.b64encode(bytes(raw)).decode()}\n"


def write(path: Path, data: str | bytes) -> Path:
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------
# Our log, checked by Go
# ---------------------------------------------------------------------------------------------


def test_checkpoints_open_in_go_with_the_published_verifier_key(gocheck: GoCheck, built_log: BuiltLog) -> None:
    assert fhir_bridge(built_log.data_dir, "log", "vkey").strip() == built_log.vkey
    for size, note in built_log.checkpoints.items():
        origin, go_size, go_root = gocheck.accepts("checkpoint", built_log.vkey, note).split(" ")
        assert (origin, int(go_size)) == (ORIGIN, size)
        assert bytes.fromhex(go_root) == built_log.root(size), f"root of the checkpoint at size {size}"


def test_go_rejects_altered_checkpoints_and_wrong_keys(gocheck: GoCheck, built_log: BuiltLog) -> None:
    note_path = built_log.checkpoints[SIZES[-1]]
    note = note_path.read_text()
    bad = built_log.work / "bad.note"
    for tampered in (alter_checkpoint_root(note), alter_checkpoint_size(note), alter_signature(note)):
        assert tampered != note
        gocheck.rejects(BAD_SIGNATURE, "checkpoint", built_log.vkey, write(bad, tampered))
    # The same checkpoint against another key of the same name: not verifiable.
    other = fhir_bridge(built_log.work / "other-key", "keygen").strip()
    assert other.split("+")[0] == ORIGIN and other != built_log.vkey
    gocheck.rejects(UNKNOWN_KEY, "checkpoint", other, note_path)


@pytest.mark.parametrize(
    ("index", "size"),
    [(0, None), (1, None), (11, None), (22, None), (31, None), (32, None), (39, None),
     (0, 1), (2, 3), (5, 7), (12, 13), (0, 23), (16, 23)],
)
def test_inclusion_proofs_check_in_go(gocheck: GoCheck, built_log: BuiltLog, index: int, size: int | None) -> None:
    args = ["log", "prove", str(index)] + ([] if size is None else ["--size", str(size)])
    proof = write(built_log.work / f"proof-{index}-{size}.txt", fhir_bridge(built_log.data_dir, *args))
    expected_size = SIZES[-1] if size is None else size
    assert gocheck.accepts("record", built_log.vkey, proof, built_log.entries[index]) == (
        f"OK index {index} size {expected_size}"
    )


def test_go_rejects_inclusion_proofs_for_the_wrong_entry_or_checkpoint(gocheck: GoCheck, built_log: BuiltLog) -> None:
    index = 22
    text = fhir_bridge(built_log.data_dir, "log", "prove", str(index))
    proof = write(built_log.work / "proof.txt", text)
    entry = built_log.entry_bytes(index)
    gocheck.accepts("record", built_log.vkey, proof, built_log.entries[index])

    bad_entry = built_log.work / "bad-entry.bin"
    for altered in (entry[:-1] + bytes([entry[-1] ^ 0x01]), entry + b"\n", entry[1:]):
        gocheck.rejects(BAD_PROOF, "record", built_log.vkey, proof, write(bad_entry, altered))
    gocheck.rejects(BAD_PROOF, "record", built_log.vkey, proof, built_log.entries[index + 1])  # another entry

    head, _, checkpoint = text.partition("\n\n")
    bad_proof = built_log.work / "bad-proof.txt"
    for tampered in (alter_checkpoint_root(checkpoint), alter_checkpoint_size(checkpoint), alter_signature(checkpoint)):
        gocheck.rejects(BAD_SIGNATURE, "record", built_log.vkey, write(bad_proof, f"{head}\n\n{tampered}"), built_log.entries[index])
    lines = head.split("\n")
    wrong_index = "\n".join([lines[0], f"index {index + 1}", *lines[2:]])
    gocheck.rejects(BAD_PROOF, "record", built_log.vkey, write(bad_proof, f"{wrong_index}\n\n{checkpoint}"), built_log.entries[index])
    flipped_hash = "\n".join([*lines[:2], _other_b64_char(lines[2][0]) + lines[2][1:], *lines[3:]])
    gocheck.rejects(BAD_PROOF, "record", built_log.vkey, write(bad_proof, f"{flipped_hash}\n\n{checkpoint}"), built_log.entries[index])
    missing_hash = "\n".join(lines[:-1])
    gocheck.rejects(BAD_PROOF, "record", built_log.vkey, write(bad_proof, f"{missing_hash}\n\n{checkpoint}"), built_log.entries[index])

    other = fhir_bridge(built_log.work / "other-key-2", "keygen").strip()
    gocheck.rejects(UNKNOWN_KEY, "record", other, proof, built_log.entries[index])


CONSISTENCY_PAIRS = [(1, 3), (1, 40), (3, 7), (3, 23), (7, 13), (7, 40), (13, 23), (13, 40), (23, 40), (40, 40)]


@pytest.mark.parametrize(("old", "new"), CONSISTENCY_PAIRS)
def test_consistency_proofs_check_in_go(gocheck: GoCheck, built_log: BuiltLog, old: int, new: int) -> None:
    proof = write(built_log.work / f"consistency-{old}-{new}.txt",
                  fhir_bridge(built_log.data_dir, "log", "consistency", str(old), str(new)))
    old_note, new_note = built_log.checkpoints[old], built_log.checkpoints[new]
    assert gocheck.accepts("tree", built_log.vkey, old_note, new_note, proof) == f"OK {old} -> {new}"


def test_go_rejects_consistency_proofs_that_do_not_fit(gocheck: GoCheck, built_log: BuiltLog) -> None:
    cps, vkey, work = built_log.checkpoints, built_log.vkey, built_log.work
    text = fhir_bridge(built_log.data_dir, "log", "consistency", "7", "23")
    proof = write(work / "consistency.txt", text)
    gocheck.accepts("tree", vkey, cps[7], cps[23], proof)

    gocheck.rejects(BAD_PROOF, "tree", vkey, cps[3], cps[23], proof)  # another old checkpoint
    gocheck.rejects(BAD_PROOF, "tree", vkey, cps[7], cps[40], proof)  # another new checkpoint
    hashes = text.split()
    bad = work / "bad-consistency.txt"
    flipped = [_other_b64_char(hashes[1][0]) + hashes[1][1:], *hashes[2:]]
    for tampered in ([hashes[0], *flipped], hashes[:-1], [*hashes, hashes[0]], list(reversed(hashes))):
        assert tampered != hashes
        gocheck.rejects(BAD_PROOF, "tree", vkey, cps[7], cps[23], write(bad, "\n".join(tampered) + "\n"))
    bad_note = work / "bad-new.note"
    gocheck.rejects(BAD_SIGNATURE, "tree", vkey, cps[7], write(bad_note, alter_checkpoint_root(cps[23].read_text())), proof)
    other = fhir_bridge(work / "other-key-3", "keygen").strip()
    gocheck.rejects(UNKNOWN_KEY, "tree", other, cps[7], cps[23], proof)


# ---------------------------------------------------------------------------------------------
# Go's keys and notes, used here
# ---------------------------------------------------------------------------------------------


def _go_key(gocheck: GoCheck, name: str) -> tuple[str, str]:
    skey, vkey = gocheck.accepts("genkey", name).split("\n")
    return skey, vkey


def test_go_generated_key_loads_and_notes_open_both_ways(gocheck: GoCheck, tmp_path: Path) -> None:
    skey, vkey = _go_key(gocheck, "go-made.example/notes")
    signer = parse_signer_key(skey)
    assert signer.name == "go-made.example/notes"
    assert signer.skey == skey
    assert signer.verifier.vkey == vkey
    assert parse_verifier_key(vkey) == signer.verifier

    text = "go-made.example/notes\n7\nsome text — with UTF-8\n"
    go_note = gocheck.accepts("sign", skey, write(tmp_path / "text", text)) + "\n"
    opened = open_note(go_note, [parse_verifier_key(vkey)])
    assert opened.text == text and opened.verified_by == ("go-made.example/notes",)
    ours = sign_note(text, signer)
    assert ours == go_note  # Ed25519 is deterministic: same key, same text, same note byte for byte
    assert gocheck.accepts("open", vkey, write(tmp_path / "ours.note", ours)) + "\n" == text

    # A note altered after signing, or checked with another key, fails on both sides.
    _, other_vkey = _go_key(gocheck, "go-made.example/notes")
    with pytest.raises(VerificationError):
        open_note(go_note, [parse_verifier_key(other_vkey)])
    gocheck.rejects(UNKNOWN_KEY, "open", other_vkey, tmp_path / "ours.note")
    altered = go_note.replace("some text", "Some text")
    with pytest.raises(VerificationError):
        open_note(altered, [parse_verifier_key(vkey)])
    gocheck.rejects(BAD_SIGNATURE, "open", vkey, write(tmp_path / "altered.note", altered))
    with pytest.raises(VerificationError):
        open_note(alter_signature(go_note), [parse_verifier_key(vkey)])


def test_go_generated_key_signs_the_logs_checkpoints(gocheck: GoCheck, tmp_path: Path) -> None:
    skey, vkey = _go_key(gocheck, ORIGIN)
    data_dir = tmp_path / "data"
    write_key_file(data_dir / "log-signing.key", parse_signer_key(skey))
    assert fhir_bridge(data_dir, "log", "vkey").strip() == vkey
    entries = [write(tmp_path / f"e{i}", f"entry {i}\n" * i) for i in range(5)]
    fhir_bridge(data_dir, "log", "append", *entries)
    note = write(tmp_path / "checkpoint.note", fhir_bridge(data_dir, "log", "checkpoint"))
    root = root_from_leaf_hashes([leaf_hash(e.read_bytes()) for e in entries])
    assert gocheck.accepts("checkpoint", vkey, note) == f"{ORIGIN} 5 {root.hex()}"
    proof = write(tmp_path / "proof.txt", fhir_bridge(data_dir, "log", "prove", "3"))
    assert gocheck.accepts("record", vkey, proof, entries[3]) == "OK index 3 size 5"
    gocheck.rejects(BAD_PROOF, "record", vkey, proof, entries[2])
