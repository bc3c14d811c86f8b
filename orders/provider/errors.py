"""What the payment provider's answers mean to the pipeline: retry, wait, or stop."""

from orders.errors import OrderflowError


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
