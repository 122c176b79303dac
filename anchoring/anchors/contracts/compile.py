"""Rebuild ``CheckpointAnchor.json`` from ``CheckpointAnchor.sol`` with solcjs (npm package ``solc``).

Run from the repository root after ``npm ci``: ``python3 -m anchoring.anchors.contracts.compile``.
The committed artifact is what the bridge deploys; a test recompiles and compares, so the
bytecode on chain can always be traced to the source in the repository.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "CheckpointAnchor.sol"
ARTIFACT = HERE / "CheckpointAnchor.json"
CONTRACT = "CheckpointAnchor"
EVM_VERSION = "shanghai"  # accepted by current Besu, Quorum and public networks (no PUSH0 surprises)
OPTIMIZER = {"enabled": True, "runs": 200}


def standard_json_input(source: str) -> dict[str, Any]:
    return {
        "language": "Solidity",
        "sources": {SOURCE.name: {"content": source}},
        "settings": {
            "evmVersion": EVM_VERSION,
            "optimizer": OPTIMIZER,
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object",
                                            "evm.deployedBytecode.immutableReferences"]}},
        },
    }


def compile_with_solcjs(source: str, cwd: Path) -> dict[str, Any]:
    """The artifact solcjs makes from ``source`` (run where ``node_modules/.bin/solcjs`` is)."""
    version = subprocess.run(["npx", "--no-install", "solcjs", "--version"], cwd=cwd, capture_output=True,
                             text=True, check=True).stdout.strip().splitlines()[-1]
    done = subprocess.run(["npx", "--no-install", "solcjs", "--standard-json"], cwd=cwd, capture_output=True,
                          text=True, check=True, input=json.dumps(standard_json_input(source)))
    output = json.loads(done.stdout[done.stdout.index("{"):])  # npx may print warnings first
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise RuntimeError("solcjs: " + "; ".join(e.get("formattedMessage", e["message"]) for e in errors))
    contract = output["contracts"][SOURCE.name][CONTRACT]
    return {
        "contractName": CONTRACT,
        "compiler": f"solc {version}",
        "evmVersion": EVM_VERSION,
        "optimizer": OPTIMIZER,
        "abi": contract["abi"],
        "bytecode": "0x" + contract["evm"]["bytecode"]["object"],
        "deployedBytecode": "0x" + contract["evm"]["deployedBytecode"]["object"],
        # where the deployed code holds the operator's address (zeros in deployedBytecode)
        "immutableReferences": contract["evm"]["deployedBytecode"]["immutableReferences"],
    }


def main() -> int:
    root = HERE.parents[2]
    print(f"compiling {SOURCE.relative_to(root)} with solcjs (evmVersion {EVM_VERSION}) ...", file=sys.stderr)
    artifact = compile_with_solcjs(SOURCE.read_text(), root)
    ARTIFACT.write_text(json.dumps(artifact, indent=2) + "\n")
    print(f"wrote {ARTIFACT.relative_to(root)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
