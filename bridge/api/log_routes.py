"""Log endpoints: the latest signed checkpoint, inclusion and consistency proofs, the verifier key."""

from __future__ import annotations

import base64

from flask import Blueprint, Response, jsonify, request

from anchoring.checkpoint import format_tlog_proof
from anchoring.errors import KeyFileError, LogError

from .context import services
from .outcome import ApiError

blueprint = Blueprint("log", __name__, url_prefix="/log")

TEXT = "text/plain; charset=utf-8"


def _int_arg(name: str, default: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ApiError(400, "required", f"query parameter {name} is required", name)
        return default
    if not raw.isdigit():
        raise ApiError(400, "value", f"query parameter {name} must be a non-negative integer, found {raw[:40]!r}", name)
    return int(raw)


def _b64(hashes: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hashes]


@blueprint.get("/checkpoint")
def checkpoint() -> Response:
    latest = services().log.latest_checkpoint()
    if latest is None:
        raise ApiError(404, "not-found", "no checkpoint has been signed yet; one is signed once the log has entries")
    response = Response(latest.note, mimetype="text/plain", content_type=TEXT)
    response.headers["Cache-Control"] = "no-cache"
    return response


@blueprint.get("/vkey")
def vkey() -> Response:
    try:
        key = services().signer.verifier.vkey
    except KeyFileError:
        raise ApiError(503, "transient", "the log has no signing key configured yet") from None
    return Response(key + "\n", content_type=TEXT)


@blueprint.get("/proof/inclusion")
def inclusion() -> Response:
    log = services().log
    form = request.args.get("format", "json")
    if form not in ("json", "tlog-proof"):
        raise ApiError(400, "value", f"query parameter format must be json or tlog-proof, found {form[:40]!r}", "format")
    latest = log.latest_checkpoint()
    index = _int_arg("index")
    size = _int_arg("size", latest.checkpoint.size if latest else None)
    try:
        size, hashes = log.inclusion_proof(index, size)
    except LogError as exc:
        raise ApiError(404 if size > log.size() else 400, "not-found" if size > log.size() else "value", str(exc)) from None
    stored = log.stored_checkpoint(size)
    if form == "tlog-proof":
        if stored is None:
            raise ApiError(404, "not-found", f"no signed checkpoint of size {size}; ask for the latest size", "size")
        return Response(format_tlog_proof(index, hashes, stored.note), content_type=TEXT)
    body = {"index": index, "size": size, "hashes": _b64(hashes)}
    if stored is not None:
        body["checkpoint"] = stored.note
    return jsonify(body)


@blueprint.get("/proof/consistency")
def consistency() -> Response:
    log = services().log
    old, new = _int_arg("from"), _int_arg("to")
    try:
        _, hashes = log.consistency_proof(old, new)
    except LogError as exc:
        raise ApiError(404 if new > log.size() else 400, "not-found" if new > log.size() else "value", str(exc)) from None
    return jsonify({"from": old, "to": new, "hashes": _b64(hashes)})
