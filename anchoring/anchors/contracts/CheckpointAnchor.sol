// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title Anchors of a verifiable log's signed checkpoints (c2sp.org/tlog-checkpoint).
/// @notice Stores nothing: every anchor is an event, so one costs about 26,000 gas however large
/// the log is. Only the account that deployed the contract (the log operator) may anchor, so
/// the contract's address identifies whose anchors its events are.
/// Regulators list every anchor of a log with eth_getLogs, topics
/// [Anchored, sha256(origin)], or look up one checkpoint with [Anchored, sha256(origin), size].
/// sha256 (not keccak256) so that a verifier needs only a standard library to build the filter.
contract CheckpointAnchor {
    address public immutable operator;

    /// @param originHash sha256 of the checkpoint's origin line (UTF-8, without newline)
    /// @param size the checkpoint's tree size
    /// @param root the checkpoint's RFC 9162 root hash
    /// @param origin the origin line itself, so an event can be read without knowing it
    event Anchored(bytes32 indexed originHash, uint64 indexed size, bytes32 root, string origin);

    error NotOperator(address sender);

    constructor() {
        operator = msg.sender;
    }

    function anchor(string calldata origin, uint64 size, bytes32 root) external {
        if (msg.sender != operator) revert NotOperator(msg.sender);
        emit Anchored(sha256(bytes(origin)), size, root, origin);
    }
}
