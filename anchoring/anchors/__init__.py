"""Anchoring signed checkpoints outside the operator's control.

Backends (one interface, :class:`~anchoring.anchors.base.AnchorBackend`):

* ``local`` (:mod:`.local`): the embedded default, an append-only, hash-chained, signed journal
  file; tamper-evident, but it gives no external trust.
* ``evm`` (:mod:`.evm`): the CheckpointAnchor contract (``contracts/``) on an Ethereum JSON-RPC
  chain; anyone can list and check the anchors with ``eth_getLogs`` (:mod:`.verify`).

Anchors and their status are kept in the project database (:mod:`.store`); :mod:`.anchorer` runs a
round.  Like the rest of :mod:`anchoring`, this needs only the standard library, ``cryptography``
and ``requests``: transaction signing is injected by the caller.
"""
