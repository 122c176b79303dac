"""Transaction fees and transaction fields: pure functions (EIP-1559, with a legacy fallback)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import AnchorError

GWEI = 10**9
#: head room for the gas estimate: an event's cost does not vary, but estimates can be exact
GAS_MARGIN_PERCENT = 20


@dataclass(frozen=True)
class Fees:
    """EIP-1559 fees (``gas_price`` None), or a legacy gas price for chains without a base fee."""

    max_fee_per_gas: int | None
    max_priority_fee_per_gas: int | None
    gas_price: int | None = None


def eip1559_fees(base_fee: int, priority_fee: int, cap: int | None = None) -> Fees:
    """Offer twice the current base fee plus the tip: still includable after six full blocks
    (each may raise the base fee by 12.5 %), while only base fee + tip is ever charged."""
    max_fee = 2 * base_fee + priority_fee
    if cap is not None and max_fee > cap:
        if base_fee + priority_fee > cap:
            raise AnchorError(
                f"fees: base fee {base_fee / GWEI:.3f} gwei + tip {priority_fee / GWEI:.3f} gwei exceed the cap "
                f"anchor_max_fee_gwei = {cap / GWEI:g}; the anchor waits for cheaper blocks (or raise the cap)"
            )
        max_fee = cap
    return Fees(max_fee, min(priority_fee, max_fee))


def legacy_fees(gas_price: int, cap: int | None = None) -> Fees:
    if cap is not None and gas_price > cap:
        raise AnchorError(f"fees: gas price {gas_price / GWEI:.3f} gwei exceeds anchor_max_fee_gwei = {cap / GWEI:g}")
    return Fees(None, None, gas_price)


def with_margin(gas: int) -> int:
    return gas + gas * GAS_MARGIN_PERCENT // 100


def transaction_fields(chain_id: int, nonce: int, to: str | None, data: bytes, gas: int, fees: Fees) -> dict:
    """The transaction as eth-account's ``sign_transaction`` takes it (integers, 0x data);
    ``to`` None creates a contract."""
    tx: dict = {"chainId": chain_id, "nonce": nonce, "value": 0, "gas": gas, "data": "0x" + data.hex()}
    if to is not None:
        tx["to"] = to
    if fees.gas_price is not None:
        tx["gasPrice"] = fees.gas_price
    else:
        tx.update(type=2, maxFeePerGas=fees.max_fee_per_gas, maxPriorityFeePerGas=fees.max_priority_fee_per_gas)
    return tx


def rpc_transaction(tx: dict, sender: str) -> dict:
    """The same transaction as ``eth_sendTransaction`` takes it (hex quantities, a ``from``)."""
    out = {"from": sender}
    for key, value in tx.items():
        if key in ("chainId", "type"):
            out[key] = hex(value)
        elif isinstance(value, int):
            out[key] = hex(value)
        else:
            out[key] = value
    return out


#: a replacement must raise both fees by at least 10 % (geth, Besu); 12.5 % leaves a margin
REPLACEMENT_BUMP_PER_MILLE = 125


def _bumped(old: int | None, current: int | None) -> int | None:
    if old is None:
        return current
    return max(current or 0, old + old * REPLACEMENT_BUMP_PER_MILLE // 1000 + 1)


def replacement_fees(old: dict, current: Fees, cap: int | None = None) -> Fees:
    """Fees for a transaction replacing ``old`` (same nonce): at least 12.5 % more on every fee,
    and no less than what the chain asks now."""
    if current.gas_price is not None or "gasPrice" in old:
        price = _bumped(old.get("gasPrice"), current.gas_price)
        return legacy_fees(price or 0, cap)
    max_fee = _bumped(old.get("maxFeePerGas"), current.max_fee_per_gas) or 0
    tip = _bumped(old.get("maxPriorityFeePerGas"), current.max_priority_fee_per_gas) or 0
    if cap is not None and max_fee > cap:
        raise AnchorError(f"fees: replacing a stuck anchor needs {max_fee / GWEI:.3f} gwei, above "
                          f"anchor_max_fee_gwei = {cap / GWEI:g}; it waits (or raise the cap)")
    return Fees(max_fee, min(tip, max_fee))
