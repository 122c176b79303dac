"""A regulator's view of a Bundle check: the anchor on chain (optional) and a plain-text table."""

from __future__ import annotations

from .anchors.rpc import RpcClient
from .anchors.verify import verify_evm_anchor
from .bundle_verify import BundleReport
from .errors import AnchoringError


def check_anchor(report: BundleReport, rpc_url: str, min_confirmations: int = 1) -> None:
    """Look the Bundle's checkpoint up on chain; sets ``anchor_ok`` and ``anchor_detail``."""
    anchor, checkpoint = report.anchor, report.checkpoint
    if checkpoint is None:
        report.anchor_ok, report.anchor_detail = False, "no valid checkpoint to look up"
        return
    if not anchor or anchor.get("backend") != "evm" or not anchor.get("chainId") or not anchor.get("contract"):
        report.anchor_ok = False
        report.anchor_detail = (f"expected an EVM anchor reference (chainId, contract) for size {checkpoint.size}, "
                                f"found {anchor or 'none'}")
        return
    try:
        evidence = verify_evm_anchor(RpcClient(rpc_url, retries=2), checkpoint, int(anchor["chainId"]),
                                     str(anchor["contract"]), min_confirmations)
    except AnchoringError as exc:
        report.anchor_ok, report.anchor_detail = False, str(exc)
        return
    report.anchor_ok = True
    report.anchor_detail = f"{evidence.location}, {evidence.confirmations} confirmation(s)"


def render(report: BundleReport) -> str:
    rows = [("#", "resource", "index", "hash", "checkpoint", "inclusion", "result")]
    for e in report.entries:
        rows.append((str(e.position), e.reference, "-" if e.index is None else str(e.index),
                     "ok" if e.hash_ok else "-", "ok" if e.checkpoint_ok else "-", "ok" if e.inclusion_ok else "-",
                     "OK" if e.ok else f"FAIL: {e.error}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows]
    cp = report.checkpoint
    if report.checkpoint_error:
        lines.append(f"checkpoint: FAIL: {report.checkpoint_error}")
    elif cp is not None:
        lines.append(f"checkpoint: OK: {cp.origin} size {cp.size}, signature verified")
    anchor = report.anchor
    where = ", ".join(f"{k}={v}" for k, v in anchor.items()) if anchor else "none in the Bundle"
    if report.anchor_ok is None:
        lines.append(f"anchor: not checked on chain (give --rpc URL); reference: {where}")
    else:
        lines.append(f"anchor: {'OK' if report.anchor_ok else 'FAIL'}: {report.anchor_detail}")
    failed = sum(not e.ok for e in report.entries)
    lines.append(f"{len(report.entries) - failed} of {len(report.entries)} entries verified"
                 + ("" if report.ok else " — VERIFICATION FAILED"))
    return "\n".join(lines) + "\n"
