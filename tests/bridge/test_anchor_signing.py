"""The anchor transaction signer: key from a private file or the environment, never shown."""

from __future__ import annotations

import logging
import secrets
import subprocess
import sys

import pytest

from bridge.anchor_signing import ENV_KEY, LocalTransactionSigner, load_transaction_signer
from bridge.errors import ConfigError


def test_key_from_file_or_environment_and_never_shown(tmp_path, caplog):
    key = secrets.token_hex(32)
    path = tmp_path / "anchor.key"
    path.write_text("0x" + key + "\n")
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600") as caught:
        load_transaction_signer(path, env={})
    assert key not in str(caught.value)
    path.chmod(0o600)
    caplog.set_level(logging.DEBUG)
    from_file = load_transaction_signer(path, env={})
    from_env = load_transaction_signer(None, env={ENV_KEY: key})
    assert from_file.address == from_env.address
    assert load_transaction_signer(None, env={}) is None
    assert key not in repr(from_file) and key not in caplog.text
    with pytest.raises(ConfigError, match="64 hex digits") as caught:
        LocalTransactionSigner(key[:-1] + "z")
    assert key[:-1] not in str(caught.value)


def test_signed_transaction_recovers_to_the_signer():
    from eth_account import Account

    signer = LocalTransactionSigner(secrets.token_hex(32))
    tx = {"chainId": 31337, "nonce": 0, "value": 0, "gas": 30000, "data": "0x01", "type": 2,
          "to": "0x" + "ab" * 20, "maxFeePerGas": 2 * 10**9, "maxPriorityFeePerGas": 10**9}
    raw, tx_hash = signer.sign(tx)
    assert Account.recover_transaction(raw) == signer.address
    assert len(tx_hash) == 66


def test_anchoring_stands_alone():
    """A regulator installs anchoring alone: it must not import eth-account, web3 or the bridge."""
    code = ("import sys, anchoring.anchors.anchorer, anchoring.anchors.evm, anchoring.anchors.local, "
            "anchoring.anchors.verify, anchoring.anchors.contracts.compile; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('bridge', 'adapters', 'eth_account', 'eth_utils', 'eth_abi', 'web3', 'eth_tester')); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
