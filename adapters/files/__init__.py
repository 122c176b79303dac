"""File drop: an inbox folder polled for HL7v2 files (single messages and FHS/BHS batches)."""
