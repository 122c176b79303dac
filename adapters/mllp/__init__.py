"""MLLP (Minimal Lower Layer Protocol) listener for HL7v2 feeds: framing, grouping, the server."""
