"""Errors the pipeline tells apart: what to retry, what to wait for, what is final."""


class OrderflowError(Exception):
    """Base class for the domain's errors."""


class TransientError(OrderflowError):
    """Worth retrying with backoff: network errors, timeouts, 5xx."""


class Throttled(TransientError):
    """The provider (or our own limiter) asks us to come back later; not a failure of the step."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self):
        # Celery pickles a task's exception into its result and retry; keep retry_after.
        return (self.__class__, (str(self), self.retry_after))


class RateLimitWait(Throttled):
    """Our own cluster-wide limiter has no slot soon enough: come back when it has one."""


class PermanentError(OrderflowError):
    """Retrying cannot help (a 4xx other than a decline or a 429): the step fails at once."""


class InvalidOrder(OrderflowError):
    """Bad input the user can fix; carries field errors in DRF's shape."""

    def __init__(self, errors: dict) -> None:
        super().__init__(str(errors))
        self.errors = errors


class IdempotencyConflict(OrderflowError):
    """The Idempotency-Key was used before with a different body."""
