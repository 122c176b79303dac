#!/usr/bin/env python3
"""Gas used per anchor (issue #4; target at most 35,000), measured on a real anvil node.

    python3 bench/anchor_bench.py [--anchors N] [--period SECONDS] [--json PATH]

Starts anvil (``npm ci`` installs it) on a free 127.0.0.1 port, deploys the committed
CheckpointAnchor bytecode with a fresh key, then anchors ``N`` checkpoints through the bridge's own
code path (``Anchorer`` with the ``evm`` backend and an eth-account signer) for logs of very
different sizes and origins of several lengths, and reads ``gasUsed`` from every receipt.  The
cost model follows: one transaction per anchoring period, whatever the number of records logged
in it, so the yearly cost is (seconds per year / period) x gas x fee.
"""

from __future__ import annotations

import argparse
import glob
import json
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anchoring.anchors.anchorer import Anchorer  # noqa: E402
from anchoring.anchors.evm import EvmBackend  # noqa: E402
from anchoring.anchors.rpc import RpcClient  # noqa: E402
from anchoring.anchors.store import AnchorStore  # noqa: E402
from anchoring.db import SqliteDatabase  # noqa: E402
from anchoring.log import MerkleLog  # noqa: E402
from anchoring.note import Signer  # noqa: E402
from bridge.anchor_signing import LocalTransactionSigner  # noqa: E402

TARGET_GAS = 35_000
ORIGINS = ["a.example/log", "hospital-network.example.org/fhir-bridge/log",
           "very-long-consortium-member-name.regional-health-authority.example.eu/fhir-bridge/production/log"]


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def start_anvil() -> tuple[subprocess.Popen, str]:
    hits = sorted(glob.glob(str(ROOT / "node_modules/@foundry-rs/anvil-linux-*/bin/anvil")))
    if not hits:
        sys.exit("anvil not found: run `npm ci` in the repository root")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([hits[-1], "--host", "127.0.0.1", "--port", str(port), "--silent"])
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=1)
            return process, url
        except requests.RequestException:
            time.sleep(0.05)
    process.kill()
    sys.exit("anvil did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anchors", type=int, default=12, help="anchors per origin (default 12)")
    parser.add_argument("--period", type=float, default=60.0, help="anchoring period for the cost model (s)")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()

    process, url = start_anvil()
    try:
        rpc = RpcClient(url)
        chain_id = rpc.chain_id()
        key = LocalTransactionSigner(secrets.token_hex(32))
        rpc.call("anvil_setBalance", key.address, hex(10**21))
        deployer = EvmBackend(rpc, chain_id, None, confirmations=1, signer=key, progress=progress)
        contract, _, deploy_gas = deployer.deploy(timeout=30, poll=0.1)
        progress(f"deployed at {contract}: {deploy_gas} gas")
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for o, origin in enumerate(ORIGINS):
                db = SqliteDatabase(Path(tmp) / f"bench{o}.db", synchronous="OFF")
                log = MerkleLog(db, origin)
                log.ensure_schema()
                store = AnchorStore(db)
                store.ensure_schema()
                backend = EvmBackend(rpc, chain_id, contract, confirmations=1, signer=key)
                anchorer = Anchorer(log, store, backend, Signer.generate(origin.replace("/", "_")))
                batch = 1
                for i in range(args.anchors):
                    log.append(secrets.token_bytes(150) for _ in range(batch))  # 1 ... 2^(N-1) records
                    record = anchorer.run_once().new
                    receipt = rpc.receipt(record.tx_hash)
                    gas = int(receipt["gasUsed"], 16)
                    rows.append({"origin_bytes": len(origin), "records_in_period": batch, "size": record.size,
                                 "gas_used": gas})
                    progress(f"origin of {len(origin)} bytes, {batch} records this period (size {record.size}): "
                             f"{gas} gas")
                    batch = min(batch * 2, 4096) if i < 12 else batch
                db.close()
    finally:
        process.terminate()
        process.wait(10)

    gas = [r["gas_used"] for r in rows]
    per_year = 365 * 24 * 3600 / args.period
    typical = statistics.median(r["gas_used"] for r in rows if r["origin_bytes"] == len(ORIGINS[1]))
    print(f"gas per anchor: min {min(gas)}, median {statistics.median(gas):.0f}, max {max(gas)} "
          f"(target <= {TARGET_GAS}: {'met' if max(gas) <= TARGET_GAS else 'NOT MET'}); deployment {deploy_gas}")
    for origin in ORIGINS:
        g = [r["gas_used"] for r in rows if r["origin_bytes"] == len(origin)]
        print(f"  origin of {len(origin):3d} bytes: {min(g)}-{max(g)} gas, whatever the records per period "
              f"({min(r['records_in_period'] for r in rows)}-{max(r['records_in_period'] for r in rows)})")
    print(f"cost model: one transaction per {args.period:g} s period = {per_year:,.0f} anchors a year")
    for gwei in (0.1, 1, 10, 30):
        eth = typical * gwei * 1e-9
        print(f"  at {gwei:>4g} gwei: {eth:.6f} ETH per anchor, {eth * per_year:,.3f} ETH a year "
              f"({typical:.0f} gas each)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows, "deploy_gas": deploy_gas, "period": args.period}, indent=2))
    return 0 if max(gas) <= TARGET_GAS else 1


if __name__ == "__main__":
    sys.exit(main())
