"""The committed contract artifact is what solcjs makes of the committed source (evmVersion shanghai)."""

from __future__ import annotations

import json

from anchoring.anchors.contracts import compile as contract_build

from .nodes import ROOT, solcjs_available


def test_artifact_matches_a_fresh_solcjs_build():
    solcjs_available()
    fresh = contract_build.compile_with_solcjs(contract_build.SOURCE.read_text(), ROOT)
    committed = json.loads(contract_build.ARTIFACT.read_text())
    assert fresh["compiler"] == committed["compiler"], "solc version changed: pin it in package.json, or rebuild"
    for key in ("abi", "bytecode", "deployedBytecode", "immutableReferences", "evmVersion", "optimizer"):
        assert fresh[key] == committed[key], (
            f"{key} differs: run `python3 -m anchoring.anchors.contracts.compile` and commit the artifact"
        )
