"""The one failure of a shared rate-limit store, as the limiter and the store both name it."""

__all__ = ["StoreUnavailable"]


class StoreUnavailable(Exception):
    """The shared store gave no answer in time, or refused us: the request is decided by `on_error`."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error  # what went wrong: a label of sidecar_ratelimit_store_errors_total, or "resting"
