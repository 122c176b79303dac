"""The committed CheckpointAnchor artifact and the check that code on chain is that contract: pure."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from ..errors import AnchorVerificationError


@cache
def load_artifact() -> dict:
    """The committed compiler output: ABI, creation and runtime bytecode, immutable positions."""
    text = resources.files(__package__).joinpath("contracts/CheckpointAnchor.json").read_text()
    return json.loads(text)


def operator_from_code(code: bytes, contract: str, artifact: dict | None = None) -> str:
    """Check that ``code`` is CheckpointAnchor's runtime code and return the operator it holds.

    The runtime code equals the compiled ``deployedBytecode`` except where the constructor wrote
    the immutable ``operator`` (32-byte words, listed in ``immutableReferences``)."""
    artifact = artifact or load_artifact()
    expected = bytes.fromhex(artifact["deployedBytecode"][2:])
    if not code:
        raise AnchorVerificationError(
            f"contract: expected the CheckpointAnchor contract at {contract}, found no code there on this chain; "
            "check anchor_contract (or run `fhir-bridge anchor deploy`)"
        )
    ranges = [(r["start"], r["length"]) for refs in artifact["immutableReferences"].values() for r in refs]
    masked = bytearray(code)
    if len(code) == len(expected):
        for start, length in ranges:
            masked[start : start + length] = bytes(length)
    if bytes(masked) != expected:
        raise AnchorVerificationError(
            f"contract: expected the CheckpointAnchor runtime code ({len(expected)} bytes) at {contract}, "
            f"found other code ({len(code)} bytes): this address is another contract"
        )
    words = {code[start : start + length] for start, length in ranges}
    if len(words) != 1:
        raise AnchorVerificationError(f"contract: expected one operator address in the code at {contract}")
    return "0x" + words.pop()[-20:].hex()
