"""Real EVM nodes for the anchoring tests: anvil (npm @foundry-rs/anvil) as a process, and
eth-tester with py-evm in-process behind a small JSON-RPC HTTP server (eth-tester speaks Python,
the bridge speaks JSON-RPC over HTTP, so the wrapper only translates field names and encodings)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from tests.components import find_executable, free_port, missing

ROOT = Path(__file__).resolve().parents[3]
ANVIL_GLOBS = (str(ROOT / "node_modules/@foundry-rs/anvil-linux-*/bin/anvil"),)


def anvil_binary() -> str:
    found = find_executable("anvil", ANVIL_GLOBS)
    if found is None:
        missing("anvil", "run `npm ci` in the repository root (package.json pins @foundry-rs/anvil)")
    return str(found)


def solcjs_available() -> None:
    if not (ROOT / "node_modules/.bin/solcjs").exists() or shutil.which("npx") is None:
        missing("solcjs", "run `npm ci` in the repository root (package.json pins solc)")


def rpc_call(url: str, method: str, *params: Any) -> Any:
    body = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)},
                         timeout=10).json()
    if "error" in body:
        raise RuntimeError(f"{method}: {body['error']}")
    return body["result"]


class Anvil:
    """One anvil process on a free 127.0.0.1 port; ``state`` keeps the chain across restarts."""

    def __init__(self, chain_id: int = 31337, state: Path | None = None, port: int | None = None) -> None:
        self.binary = anvil_binary()
        self.chain_id = chain_id
        self.state = state
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Anvil:
        cmd = [self.binary, "--host", "127.0.0.1", "--port", str(self.port), "--chain-id", str(self.chain_id),
               "--accounts", "2", "--silent"]
        if self.state is not None:
            cmd += ["--state", str(self.state), "--state-interval", "1"]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"anvil exited: {self.process.stderr.read().decode()[-500:]}")
            try:
                rpc_call(self.url, "eth_chainId")
                return self
            except (requests.RequestException, ValueError):
                time.sleep(0.05)
        raise RuntimeError("anvil did not answer within 15 s")

    def stop(self, kill: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.process.wait(10)
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def rpc(self, method: str, *params: Any) -> Any:
        return rpc_call(self.url, method, *params)

    def fund(self, address: str, wei: int = 10**20) -> None:
        self.rpc("anvil_setBalance", address, hex(wei))


# ---------------------------------------------------------------------------------------------
# eth-tester behind JSON-RPC
# ---------------------------------------------------------------------------------------------


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _to_rpc(value: Any) -> Any:
    if isinstance(value, dict):
        return {_camel(k): _to_rpc(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_rpc(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value


def _block_arg(tag: str) -> int | str:
    return tag if tag in ("latest", "earliest", "pending", "safe", "finalized") else int(tag, 16)


class EthTesterRpc:
    """eth-tester (py-evm) served as JSON-RPC on a free 127.0.0.1 port, one request at a time."""

    def __init__(self) -> None:
        from eth_tester import EthereumTester, PyEVMBackend

        self.tester = EthereumTester(PyEVMBackend())
        self.chain_id = int(self.tester.backend.chain.chain_id)
        self.accounts = [a.lower() for a in self.tester.get_accounts()]
        self._lock = threading.Lock()
        rpc = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with rpc._lock:
                    try:
                        body = {"jsonrpc": "2.0", "id": request["id"],
                                "result": rpc.dispatch(request["method"], request["params"])}
                    except NotImplementedError:
                        body = {"jsonrpc": "2.0", "id": request["id"],
                                "error": {"code": -32601, "message": f"method {request['method']} not found"}}
                    except Exception as exc:  # the node's answer to a bad transaction
                        body = {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32000, "message": str(exc)}}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> EthTesterRpc:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def dispatch(self, method: str, params: list) -> Any:
        from eth_tester.exceptions import TransactionNotFound

        t = self.tester
        if method == "eth_chainId":
            return hex(self.chain_id)
        if method == "eth_blockNumber":
            return hex(t.get_block_by_number("latest")["number"])
        if method == "eth_getBlockByNumber":
            try:
                return _to_rpc(t.get_block_by_number(_block_arg(params[0])))
            except Exception:
                return None
        if method == "eth_getTransactionCount":
            return hex(t.get_nonce(params[0], _block_arg(params[1])))
        if method == "eth_gasPrice":
            return hex(10**9)
        if method == "eth_estimateGas":
            tx = {k: v for k, v in params[0].items() if k in ("from", "to", "data")}
            return hex(t.estimate_gas(tx))
        if method == "eth_sendRawTransaction":
            return t.send_raw_transaction(params[0])
        if method == "eth_sendTransaction":
            names = {"maxFeePerGas": "max_fee_per_gas", "maxPriorityFeePerGas": "max_priority_fee_per_gas",
                     "gasPrice": "gas_price"}
            tx = {}
            for key, value in params[0].items():
                if key in ("chainId", "type"):
                    continue
                name = names.get(key, key)
                tx[name] = int(value, 16) if name in ("gas", "nonce", "value", *names.values()) else value
            return t.send_transaction(tx)
        if method in ("eth_getTransactionReceipt", "eth_getTransactionByHash"):
            try:
                found = (t.get_transaction_receipt if method.endswith("Receipt") else t.get_transaction_by_hash)(
                    params[0])
            except TransactionNotFound:
                return None
            return _to_rpc(found)
        if method == "eth_getCode":
            return t.get_code(params[0])
        if method == "eth_getLogs":
            flt = params[0]
            filter_id = t.create_log_filter(
                from_block=int(flt.get("fromBlock", "0x0"), 16),
                to_block=None if flt.get("toBlock", "latest") == "latest" else int(flt["toBlock"], 16),
                address=flt.get("address"), topics=flt.get("topics"))
            try:
                return _to_rpc(t.get_all_filter_logs(filter_id))
            finally:
                t.delete_filter(filter_id)
        raise NotImplementedError(method)
