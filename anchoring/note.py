"""C2SP signed notes with Ed25519 keys (c2sp.org/signed-note), as Go's ``sumdb/note`` reads them.

Key strings:

* verifier key ``<name>+<key id hex>+<base64(0x01 || public key)>``
* signer key ``PRIVATE+KEY+<name>+<key id hex>+<base64(0x01 || private seed)>``

where the key id is the first four bytes of SHA-256(name || 0x0A || 0x01 || public key).
A note is its text (UTF-8, ending in a newline), a blank line, then one line per signature:
``— <name> <base64(key id || signature)>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .errors import KeyFileError, VerificationError

ALG_ED25519 = 0x01
SIGNATURE_PREFIX = "\u2014 "  # em dash, space
MAX_SIGNATURES = 100


def b64decode_strict(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise VerificationError(f"{what}: expected standard base64, found {text[:40]!r}") from exc


def check_key_name(name: str) -> None:
    """Key names are non-empty UTF-8 without spaces or '+' (Go's note package rule)."""
    if not name or "+" in name or any(ch.isspace() for ch in name):
        raise VerificationError(f"key name: expected non-empty text without spaces or '+', found {name!r}")


def key_id(name: str, public_key: bytes) -> int:
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True)
class Verifier:
    name: str
    key_id: int
    public_key: bytes

    @property
    def vkey(self) -> str:
        """The verifier key string to publish."""
        data = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_id:08x}+{data}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    name: str
    key_id: int
    _seed: bytes

    @classmethod
    def generate(cls, name: str) -> Signer:
        check_key_name(name)
        private = Ed25519PrivateKey.generate()
        seed = private.private_bytes_raw()
        return cls(name, key_id(name, _public_from_seed(seed)), seed)

    @property
    def skey(self) -> str:
        """The signer key string (secret): what a key file holds."""
        data = base64.b64encode(bytes([ALG_ED25519]) + self._seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{data}"

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.key_id, _public_from_seed(self._seed))

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self._seed).sign(message)

    def __repr__(self) -> str:  # never print the seed
        return f"Signer(name={self.name!r}, key_id={self.key_id:08x})"


def _public_from_seed(seed: bytes) -> bytes:
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _split_key(text: str, parts: int, what: str) -> list[str]:
    fields = text.strip().split("+", parts - 1)  # base64 key data may itself contain '+'
    if len(fields) != parts:
        raise VerificationError(f"{what}: expected {parts} '+'-separated fields, found {len(fields)}")
    return fields


def _key_material(name: str, hex_id: str, data: str, what: str) -> tuple[int, bytes]:
    check_key_name(name)
    if len(hex_id) != 8 or any(c not in "0123456789abcdef" for c in hex_id):
        raise VerificationError(f"{what}: expected an 8-digit lowercase hex key id, found {hex_id!r}")
    raw = b64decode_strict(data, what)
    if len(raw) != 33 or raw[0] != ALG_ED25519:
        raise VerificationError(f"{what}: expected 0x01 followed by a 32-byte Ed25519 key, found {len(raw)} bytes")
    return int(hex_id, 16), raw[1:]


def parse_verifier_key(vkey: str) -> Verifier:
    """Parse ``<name>+<id>+<data>``, checking that the id matches the key."""
    name, hex_id, data = _split_key(vkey, 3, "verifier key")
    kid, public = _key_material(name, hex_id, data, "verifier key")
    expected = key_id(name, public)
    if kid != expected:
        raise VerificationError(f"verifier key: expected key id {expected:08x} for this key, found {kid:08x}")
    return Verifier(name, kid, public)


def parse_signer_key(skey: str) -> Signer:
    fields = _split_key(skey, 5, "signer key")
    if fields[:2] != ["PRIVATE", "KEY"]:
        raise VerificationError("signer key: expected it to start with PRIVATE+KEY+")
    kid, seed = _key_material(fields[2], fields[3], fields[4], "signer key")
    expected = key_id(fields[2], _public_from_seed(seed))
    if kid != expected:
        raise VerificationError(f"signer key: expected key id {expected:08x} for this key, found {kid:08x}")
    return Signer(fields[2], kid, seed)


# ---------------------------------------------------------------------------------------------
# Key files
# ---------------------------------------------------------------------------------------------


def write_key_file(path: str | Path, signer: Signer, overwrite: bool = False) -> None:
    """Write the signer key readable by its owner only (created 0600, never widened)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(f"{path} exists already; keep it, or pass --force to replace it") from exc
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(signer.skey + "\n")


def read_key_file(path: str | Path) -> Signer:
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise KeyFileError(f"no signing key at {path}: run `fhir-bridge keygen` first") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); run `chmod 600 {path}`"
        )
    try:
        return parse_signer_key(path.read_text())
    except VerificationError as exc:
        raise KeyFileError(f"{path} is not a signer key: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Notes
# ---------------------------------------------------------------------------------------------


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise VerificationError("note text: expected it to end with a newline, found none")
    if "\n\n" in text:
        raise VerificationError("note text: expected no blank line inside the text, found one")
    bad = next((ch for ch in text if ord(ch) < 0x20 and ch != "\n"), None)
    if bad is not None:
        raise VerificationError(f"note text: expected no control characters, found {bad!r}")


def sign_note(text: str, *signers: Signer) -> str:
    """The signed note: text, a blank line, one signature line per signer."""
    _check_text(text)
    message = text.encode()
    lines = []
    for s in signers:
        sig = s.key_id.to_bytes(4, "big") + s.sign(message)
        lines.append(f"{SIGNATURE_PREFIX}{s.name} {base64.b64encode(sig).decode()}\n")
    return text + "\n" + "".join(lines)


@dataclass(frozen=True)
class Note:
    text: str
    #: names of the known keys whose signatures verified
    verified_by: tuple[str, ...]


def open_note(note: str | bytes, verifiers: list[Verifier]) -> Note:
    """Check a signed note against known keys; at least one known signature must verify.

    Signatures by unknown keys are ignored, as Go's note.Open does; a signature that claims a known
    key and does not verify is an error.
    """
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise VerificationError("signed note: expected UTF-8 text, found invalid bytes") from exc
    split = note.rfind("\n\n")
    if split < 0:
        raise VerificationError("signed note: expected text, a blank line and signatures; found no blank line")
    text, sig_block = note[: split + 1], note[split + 2 :]
    _check_text(text)
    if not sig_block.endswith("\n"):
        raise VerificationError("signed note: expected the last signature line to end with a newline")
    sig_lines = sig_block[:-1].split("\n")
    if len(sig_lines) > MAX_SIGNATURES:
        raise VerificationError(f"signed note: expected at most {MAX_SIGNATURES} signatures, found {len(sig_lines)}")
    known = {(v.name, v.key_id): v for v in verifiers}
    verified: list[str] = []
    unknown: list[str] = []
    for line in sig_lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise VerificationError(f"signature line: expected '— <name> <signature>', found {line[:60]!r}")
        name, _, b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
        check_key_name(name)
        raw = b64decode_strict(b64, f"signature by {name}")
        if len(raw) < 5:
            raise VerificationError(f"signature by {name}: expected a key id and a signature, found {len(raw)} bytes")
        kid = int.from_bytes(raw[:4], "big")
        verifier = known.get((name, kid))
        if verifier is None:
            unknown.append(f"{name}+{kid:08x}")
            continue
        if not verifier.verify(text.encode(), raw[4:]):
            raise VerificationError(f"signature by {name}+{kid:08x}: expected a valid Ed25519 signature, found an invalid one")
        verified.append(name)
    if not verified:
        expected = ", ".join(f"{v.name}+{v.key_id:08x}" for v in verifiers) or "none given"
        raise VerificationError(
            f"signed note: expected a signature by a known key ({expected}), found only {', '.join(unknown)}"
        )
    return Note(text, tuple(verified))
