"""The `sidecar` command: serve, check, explain, test and demo."""
