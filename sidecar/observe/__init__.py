"""Telemetry every layer writes to: the metrics and the access/operational log."""
