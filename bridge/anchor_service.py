"""Wiring of anchoring from configuration: the backend, the store and the round runner."""

from __future__ import annotations

import logging
from collections.abc import Callable

from anchoring.anchors.anchorer import Anchorer
from anchoring.anchors.base import AnchorBackend
from anchoring.anchors.evm import EvmBackend
from anchoring.anchors.local import LocalBackend, LocalJournal
from anchoring.anchors.rpc import RpcClient
from anchoring.anchors.store import AnchorStore
from anchoring.errors import KeyFileError

from .anchor_signing import load_transaction_signer
from .config import Config
from .errors import ConfigError
from .services import Services

log = logging.getLogger("fhir_bridge.anchoring")


def anchor_store(services: Services) -> AnchorStore:
    store = AnchorStore(services.db)
    store.ensure_schema()
    return store


def open_evm_backend(config: Config, progress: Callable[[str], None] | None = None,
                     require_contract: bool = True, rpc_retries: int = 5) -> EvmBackend:
    if not config.anchor_rpc_url:
        raise ConfigError("anchor_backend is evm but anchor_rpc_url is not set (FHIR_BRIDGE_ANCHOR_RPC_URL)")
    if config.anchor_chain_id <= 0:
        raise ConfigError("anchor_chain_id is not set: give the chain id the node must serve "
                          "(FHIR_BRIDGE_ANCHOR_CHAIN_ID); eth_chainId on the node tells it")
    if require_contract and not config.anchor_contract:
        raise ConfigError("anchor_contract is not set: run `fhir-bridge anchor deploy`, then set "
                          "FHIR_BRIDGE_ANCHOR_CONTRACT to the address it prints")
    signer = load_transaction_signer(config.resolved_anchor_key_file)
    if signer is None and not config.anchor_from:
        raise ConfigError("the evm backend needs a sending account: anchor_key_file, FHIR_BRIDGE_ANCHOR_KEY, "
                          "or anchor_from (an account the node keeps unlocked)")
    return EvmBackend(
        RpcClient(config.anchor_rpc_url, retries=rpc_retries),
        config.anchor_chain_id,
        config.anchor_contract or None,
        confirmations=config.anchor_confirmations,
        signer=signer,
        sender=config.anchor_from or None,
        max_fee_gwei=config.anchor_max_fee_gwei,
        progress=progress,
        replace_after=config.anchor_replace_after,
    )


def open_backend(services: Services, progress: Callable[[str], None] | None = None,
                 rpc_retries: int = 5) -> AnchorBackend:
    config = services.config
    if config.anchor_backend == "evm":
        return open_evm_backend(config, progress, rpc_retries=rpc_retries)
    try:
        signer = services.signer
    except KeyFileError:
        signer = None  # verification needs only the verifier key; appending says what to do
    verifiers = [signer.verifier] if signer is not None else []
    return LocalBackend(LocalJournal(config.resolved_anchor_journal, signer, verifiers))


def open_anchorer(services: Services, progress: Callable[[str], None] | None = None,
                  rpc_retries: int = 5) -> Anchorer:
    return Anchorer(services.log, anchor_store(services), open_backend(services, progress, rpc_retries),
                    services.signer, progress)


def anchor_round(anchorer: Anchorer) -> None:
    """The scheduler's job: one round; failures are logged and retried next period."""
    report = anchorer.run_once()
    if report.new is not None:
        log.info("anchored checkpoint of size %d: %s %s", report.new.size, report.new.status, report.new.tx_hash)
