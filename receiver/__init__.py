"""bighub-siem's receiver: verified, deduplicated, durable BIGHUB webhook ingest."""

__version__ = "0.1.0"
__all__ = ["__version__"]
