"""Adapters: I/O with hospital systems (MLLP, file drop, FHIR clients); they hand messages to the pipeline."""
