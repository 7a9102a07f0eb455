"""An authentication sidecar for open HTTP endpoints."""

__version__ = "0.1.0"
