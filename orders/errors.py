"""Errors the pipeline tells apart: what to retry, what to wait for, what is final."""


class OrderflowError(Exception):
    """Base class for the domain's errors."""


class InvalidOrder(OrderflowError):
    """Bad input the user can fix; carries field errors in DRF's shape."""

    def __init__(self, errors: dict) -> None:
        super().__init__(str(errors))
        self.errors = errors


class IdempotencyConflict(OrderflowError):
    """The Idempotency-Key was used before with a different body."""
