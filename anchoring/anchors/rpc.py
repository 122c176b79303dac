"""A small Ethereum JSON-RPC client over ``requests``, with retry and backoff while the node is down.

Only the methods the anchor backend and its verifier use.  Quantities are JSON-RPC hex strings on
the wire and ``int`` here.  The endpoint URL may carry a provider's API key, so it is never logged
or put in an error message in full: :func:`redact_url` keeps the scheme, host and port.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests

from ..errors import AnchorError

log = logging.getLogger("anchoring.anchors.rpc")


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}{':' + str(parts.port) if parts.port else ''}"


def backoff_delays(retries: int, first: float, cap: float) -> list[float]:
    """Seconds to wait before each retry: doubling from ``first``, at most ``cap``."""
    return [min(cap, first * 2**i) for i in range(retries)]


def to_quantity(value: int) -> str:
    return hex(value)


def from_quantity(value: str | None) -> int | None:
    return None if value is None else int(value, 16)


class RpcError(AnchorError):
    """The node answered with a JSON-RPC error (not retried: asking again would not help)."""

    def __init__(self, method: str, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{method}: node answered error {code}: {message}")
        self.method, self.code, self.rpc_message, self.data = method, code, message, data


class RpcUnavailable(AnchorError):
    """The endpoint could not be reached (or answered garbage) after every retry."""


class RpcClient:
    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.delays = backoff_delays(retries, backoff, max_backoff)
        self._sleep = sleep
        self._session = requests.Session()
        self._id = 0

    def call(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call; transport failures are retried with backoff, RPC errors are not."""
        last: Exception | None = None
        for attempt in range(len(self.delays) + 1):
            if attempt:
                delay = self.delays[attempt - 1]
                log.warning("%s: %s unreachable (%s); retry %d/%d in %.1f s", method, redact_url(self.url),
                            type(last).__name__, attempt, len(self.delays), delay)
                self._sleep(delay)
            self._id += 1
            try:
                response = self._session.post(
                    self.url, json={"jsonrpc": "2.0", "id": self._id, "method": method, "params": list(params)},
                    timeout=self.timeout,
                )
                if response.status_code >= 500 or response.status_code == 429:
                    raise requests.HTTPError(f"HTTP {response.status_code}")
                body = response.json()
            except (requests.RequestException, ValueError) as exc:
                last = exc
                continue
            if not isinstance(body, dict):
                last = ValueError("not a JSON-RPC response object")
                continue
            error = body.get("error")
            if error is not None:
                raise RpcError(method, int(error.get("code", 0)), str(error.get("message", "")), error.get("data"))
            return body.get("result")
        # Only the exception's type: requests' messages repeat the full URL, API key and all.
        raise RpcUnavailable(
            f"{method}: JSON-RPC endpoint {redact_url(self.url)} unreachable after {len(self.delays) + 1} attempts "
            f"({type(last).__name__}); check anchor_rpc_url and that the node runs"
        ) from None

    def close(self) -> None:
        self._session.close()

    # -- the methods used -------------------------------------------------------------------

    def chain_id(self) -> int:
        return int(self.call("eth_chainId"), 16)

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def block(self, number: int | str = "latest") -> dict | None:
        tag = to_quantity(number) if isinstance(number, int) else number
        return self.call("eth_getBlockByNumber", tag, False)

    def nonce(self, address: str, tag: str = "pending") -> int:
        return int(self.call("eth_getTransactionCount", address, tag), 16)

    def fee_history(self, blocks: int, percentiles: list[float]) -> dict:
        return self.call("eth_feeHistory", to_quantity(blocks), "latest", percentiles)

    def max_priority_fee(self) -> int:
        return int(self.call("eth_maxPriorityFeePerGas"), 16)

    def gas_price(self) -> int:
        return int(self.call("eth_gasPrice"), 16)

    def estimate_gas(self, tx: dict) -> int:
        return int(self.call("eth_estimateGas", tx), 16)

    def send_raw_transaction(self, raw: bytes) -> str:
        return str(self.call("eth_sendRawTransaction", "0x" + raw.hex())).lower()

    def send_transaction(self, tx: dict) -> str:
        return str(self.call("eth_sendTransaction", tx)).lower()

    def transaction(self, tx_hash: str) -> dict | None:
        return self.call("eth_getTransactionByHash", tx_hash)

    def receipt(self, tx_hash: str) -> dict | None:
        return self.call("eth_getTransactionReceipt", tx_hash)

    def code(self, address: str) -> bytes:
        return bytes.fromhex(str(self.call("eth_getCode", address, "latest"))[2:])

    def logs(self, address: str | None, topics: list, from_block: int, to_block: int | str = "latest") -> list[dict]:
        flt: dict[str, Any] = {"fromBlock": to_quantity(from_block), "topics": topics,
                               "toBlock": to_quantity(to_block) if isinstance(to_block, int) else to_block}
        if address is not None:
            flt["address"] = address
        return list(self.call("eth_getLogs", flt))
