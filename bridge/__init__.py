"""fhir-bridge core: configuration, database, pipeline, the API and the CLI."""

__version__ = "0.1.0"
