"""Signing anchor transactions locally with eth-account, for :class:`anchoring.anchors.evm.EvmBackend`.

The key is a secp256k1 private key (64 hex digits, optional 0x) from a file readable by its owner
only, or from ``FHIR_BRIDGE_ANCHOR_KEY``.  It never appears in a log, an error or a ``repr``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from .errors import ConfigError

ENV_KEY = "FHIR_BRIDGE_ANCHOR_KEY"


class LocalTransactionSigner:
    """Holds an eth-account ``LocalAccount``; ``sign`` returns (raw transaction, 0x hash)."""

    def __init__(self, private_key: str) -> None:
        from eth_account import Account  # imported here: only the evm backend with a key needs it

        text = private_key.strip()
        hex_part = text[2:] if text.lower().startswith("0x") else text
        if len(hex_part) != 64 or any(c not in "0123456789abcdefABCDEF" for c in hex_part):
            raise ConfigError("anchor key: expected 64 hex digits (a secp256k1 private key), found something else")
        self._account = Account.from_key("0x" + hex_part)
        self.address: str = self._account.address

    def sign(self, tx: dict) -> tuple[bytes, str]:
        from eth_utils import to_checksum_address  # eth-account's own dependency

        if tx.get("to"):
            tx = {**tx, "to": to_checksum_address(tx["to"])}  # eth-account insists on EIP-55 case
        signed = self._account.sign_transaction(tx)
        return bytes(signed.raw_transaction), "0x" + bytes(signed.hash).hex()

    def __repr__(self) -> str:  # never print the key
        return f"LocalTransactionSigner(address={self.address})"


def read_anchor_key_file(path: Path) -> str:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise ConfigError(f"anchor_key_file {path} does not exist; create it (mode 600) or unset it") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); run `chmod 600 {path}`")
    return path.read_text()


def load_transaction_signer(key_file: Path | None, env: Mapping[str, str] | None = None) -> LocalTransactionSigner | None:
    """The signer from the key file, else from the environment; None if neither is set."""
    env = os.environ if env is None else env
    if key_file is not None:
        return LocalTransactionSigner(read_anchor_key_file(key_file))
    if env.get(ENV_KEY):
        return LocalTransactionSigner(env[ENV_KEY])
    return None
