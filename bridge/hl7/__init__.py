"""HL7v2: parsing (bridge.hl7.parser) and the types shared by the conversion engine and the ingest path."""
