"""What the payment provider's answers mean to the pipeline: retry, wait, or stop."""

from orders.errors import OrderflowError


class TransientError(OrderflowError):
    """Worth retrying with backoff: network errors, timeouts, 5xx.

    `maybe_acted` says whether the provider may have acted on the request: False only when it
    certainly did not (the connection was refused or never opened, a 503 or a 429 answer); a
    timeout after sending or a dropped answer may hide an effect, which settlement then asks for.
    """

    def __init__(self, message: str, *, maybe_acted: bool = True) -> None:
        super().__init__(message)
        self.maybe_acted = maybe_acted

    def __reduce__(self):
        return (_rebuild_transient, (self.__class__, str(self), self.maybe_acted))


def _rebuild_transient(cls, message: str, maybe_acted: bool):
    error = cls.__new__(cls)
    OrderflowError.__init__(error, message)
    error.maybe_acted = maybe_acted
    return error


class Throttled(TransientError):
    """The provider (or our own limiter) asks us to come back later; not a failure of the step."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message, maybe_acted=False)
        self.retry_after = retry_after

    def __reduce__(self):
        # Celery pickles a task's exception into its result and retry; keep retry_after.
        return (self.__class__, (str(self), self.retry_after))


class RateLimitWait(Throttled):
    """Our own cluster-wide limiter has no slot soon enough: come back when it has one."""


class PermanentError(OrderflowError):
    """Retrying cannot help (a 4xx other than a decline or a 429): the step fails at once."""
