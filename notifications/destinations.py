"""Where a webhook may be sent: http(s) URLs whose host is, and resolves only to, public addresses.

Guards against server-side request forgery: a user-supplied URL must not make our workers call
the metadata service (169.254.169.254), the loopback interface or the private network. The check
runs when an endpoint is created and again right before every delivery, and the delivery then
connects to the very address that was checked, so a DNS answer that changes in between (DNS
rebinding) cannot redirect it. ``WEBHOOKS_ALLOW_PRIVATE_URLS`` turns the range check off (tests,
local development); the scheme check stays.
"""

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

ALLOWED_SCHEMES = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DestinationError(ValueError):
    """The URL cannot be used as a webhook destination; the message is for the user."""


class DestinationRefused(DestinationError):
    """Not allowed: wrong scheme, malformed, or a non-public address. Retrying cannot help."""


class DestinationUnresolvable(DestinationError):
    """The host name did not resolve (now); may be temporary."""


@dataclass(frozen=True)
class Destination:
    url: str
    scheme: str
    hostname: str  # as written in the URL, for TLS (SNI and certificate check)
    host_header: str  # host[:port] as written in the URL
    port: int
    target: str  # path and query
    address: str  # the checked IP address to connect to


def is_public_address(address: IPAddress) -> bool:
    """False for loopback, link-local, private, shared, multicast, reserved, unspecified..."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:127.0.0.1 reaches 127.0.0.1
            return is_public_address(address.ipv4_mapped)
        if address.sixtofour is not None and not is_public_address(address.sixtofour):
            return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def resolve_destination(url: str, *, allow_private: bool | None = None) -> Destination:
    """Check `url` and pick the address to connect to; raise DestinationError if unusable.

    `allow_private` defaults to the WEBHOOKS_ALLOW_PRIVATE_URLS setting.
    """
    if allow_private is None:
        allow_private = settings.WEBHOOKS_ALLOW_PRIVATE_URLS
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise DestinationRefused(f"Not a valid URL: {exc}.") from exc
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise DestinationRefused("Only http and https URLs are allowed.")
    hostname = parts.hostname
    if not hostname:
        raise DestinationRefused("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise DestinationRefused("Credentials in the URL are not allowed.")
    port = port or ALLOWED_SCHEMES[scheme]
    addresses = _resolve(hostname, port)
    if not allow_private:
        # Every address must be public: a resolver may hand out any of them on the next lookup.
        for address in addresses:
            if not is_public_address(address):
                raise DestinationRefused(
                    f"The host {hostname!r} is or resolves to {address}, a loopback, private, "
                    "link-local, multicast, reserved or unspecified address; webhooks may only "
                    "be sent to public addresses."
                )
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    return Destination(
        url=url,
        scheme=scheme,
        hostname=hostname,
        host_header=parts.netloc.rpartition("@")[2],
        port=port,
        target=target,
        address=str(addresses[0]),
    )


def _resolve(hostname: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(hostname)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:
        raise DestinationUnresolvable(f"The host {hostname!r} could not be resolved.") from exc
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canonname, sockaddr in infos:
        # IPv6 sockaddrs may carry a zone ("fe80::1%eth0"); the address is what we judge.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise DestinationUnresolvable(f"The host {hostname!r} could not be resolved.")
    return addresses
