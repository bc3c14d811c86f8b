"""`python -m project.flower [flower options]`: Flower, refused with a known password in production.

Flower can revoke, retry and run any task, so with DEBUG=0 it must not start without credentials
of the operator's own: FLOWER_BASIC_AUTH unset, empty, a pair without a password, or the
development default is refused (exit status 2) before Flower binds a port. The check lives
here, not in settings, so that a web or worker process never needs Flower's password.
"""

import os
import sys

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def flower_basic_auth() -> str:
    """The user:password pairs (comma-separated) Flower must ask for."""
    auth = settings.FLOWER_BASIC_AUTH
    if settings.DEBUG:
        return auth or settings.INSECURE_DEFAULT_FLOWER_BASIC_AUTH
    pairs = [pair.strip() for pair in auth.split(",") if pair.strip()]
    if not pairs:
        raise ImproperlyConfigured("DEBUG=0 needs FLOWER_BASIC_AUTH=user:password.")
    for pair in pairs:
        user, _, password = pair.partition(":")
        if not user or not password:
            raise ImproperlyConfigured("FLOWER_BASIC_AUTH must be user:password pairs.")
        if pair == settings.INSECURE_DEFAULT_FLOWER_BASIC_AUTH:
            raise ImproperlyConfigured(
                "DEBUG=0 refuses the default FLOWER_BASIC_AUTH: set a password of your own."
            )
    return ",".join(pairs)


def main(argv: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    try:
        auth = flower_basic_auth()
    except ImproperlyConfigured as exc:
        print(f"flower: {exc} (see .env.example)", file=sys.stderr)
        raise SystemExit(2) from None
    # Flower reads its options from FLOWER_* variables: the password stays off the command line,
    # where any user of the host could read it.
    os.environ["FLOWER_BASIC_AUTH"] = auth
    command = [sys.executable, "-m", "celery", "-A", "project", "flower", *argv]
    os.execv(sys.executable, command)  # noqa: S606 (our own interpreter, arguments we built)


if __name__ == "__main__":
    main(sys.argv[1:])
