"""The payment provider integration (SPEC §4): its HTTP client and errors, and the sandbox.

Nothing here knows about orders: the services call the client with amounts, tokens and keys.
"""

from .client import Declined, PaymentProvider, ProviderPayment, get_provider
from .errors import PermanentError, RateLimitWait, Throttled, TransientError

__all__ = [
    "Declined",
    "PaymentProvider",
    "PermanentError",
    "ProviderPayment",
    "RateLimitWait",
    "Throttled",
    "TransientError",
    "get_provider",
]
