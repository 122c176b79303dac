"""Health endpoint for load balancers and operators."""

from __future__ import annotations

from flask import Blueprint, jsonify

from ..audit_spool import spool_directory, spool_state
from .context import services
from .outcome import operation_outcome

blueprint = Blueprint("health", __name__)


@blueprint.get("/health")
def health():  # type: ignore[no-untyped-def]
    log = services().log
    try:
        size, _ = log.state()
        latest = log.latest_checkpoint()
        queued = log.queued()
    except Exception as exc:  # the database is down or unreadable: say so, do not crash
        return operation_outcome(503, "transient", f"database unavailable: {type(exc).__name__}")
    return jsonify(
        {
            "status": "ok",
            "log": {
                "origin": log.origin,
                "size": size,
                "queued": queued,
                "checkpoint_size": latest.checkpoint.size if latest else None,
            },
            "audit_spool": spool_state(spool_directory(services().config.data_dir)),
        }
    )
