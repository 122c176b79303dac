"""GET /log/anchors: where each checkpoint is anchored (chain id, contract, transaction, block,
confirmations), from the anchors table the anchoring job keeps.

Confirmations are as of the job's last check of the chain (``updated_at``); the API never waits
on a chain node.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from anchoring.anchors.store import STATUSES, AnchorStore

from .context import services
from .outcome import ApiError

blueprint = Blueprint("anchors", __name__, url_prefix="/log")

MAX_LIMIT = 1000


def _store() -> AnchorStore:
    from flask import current_app

    store = current_app.extensions.get("fhir_bridge_anchor_store")
    if store is None:
        store = AnchorStore(services().db)
        store.ensure_schema()
        current_app.extensions["fhir_bridge_anchor_store"] = store
    return store


@blueprint.get("/anchors")
def anchors() -> Response:
    raw_limit = request.args.get("limit", "100")
    if not raw_limit.isdigit() or not 0 < int(raw_limit) <= MAX_LIMIT:
        raise ApiError(400, "value", f"query parameter limit must be 1-{MAX_LIMIT}, found {raw_limit[:20]!r}", "limit")
    raw_size = request.args.get("size")
    if raw_size is not None and not raw_size.isdigit():
        raise ApiError(400, "value", f"query parameter size must be a non-negative integer, found {raw_size[:20]!r}",
                       "size")
    status = request.args.get("status")
    if status is not None and status not in STATUSES:
        raise ApiError(400, "value", f"query parameter status must be one of {', '.join(STATUSES)}", "status")
    try:
        store = _store()
        records = store.for_size(int(raw_size)) if raw_size is not None else \
            store.list(statuses=(status,) if status else None, limit=int(raw_limit))
    except ApiError:
        raise
    except Exception as exc:  # the database is down: say so as an OperationOutcome
        raise ApiError(503, "transient", f"anchors unavailable: {type(exc).__name__}") from None
    if status and raw_size is not None:
        records = [r for r in records if r.status == status]
    if raw_size is not None and not records:
        raise ApiError(404, "not-found", f"no anchor of the checkpoint of size {raw_size}", "size")
    config = services().config
    return jsonify({
        "origin": services().log.origin,
        "backend": config.anchor_backend,
        "anchors": [
            {
                "size": r.size,
                "root": r.root.hex(),
                "status": r.status,
                "backend": r.target.split(":", 1)[0],
                "chain_id": r.chain_id,
                "contract": r.contract,
                "transaction_hash": r.tx_hash,
                "block_number": r.block_number,
                "block_hash": r.block_hash,
                "confirmations": r.confirmations,
                "checked_at": r.updated_at,
            }
            for r in records
        ],
    })
