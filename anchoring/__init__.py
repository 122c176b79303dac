"""Verifiable log for fhir-bridge: RFC 9162 Merkle trees, C2SP signed checkpoints and proofs.

This package stands alone (standard library and ``cryptography`` only) so that a regulator can
install or read it to verify proofs without the rest of the bridge.
"""
