"""The SSRF guard: which webhook URLs are refused, at creation and again at delivery."""

import socket

import pytest

from notifications.destinations import (
    DestinationRefused,
    DestinationUnresolvable,
    resolve_destination,
)
from notifications.models import WebhookDelivery, WebhookDeliveryStatus, WebhookEndpoint
from notifications.services import (
    InvalidWebhookEndpoint,
    notification_send,
    webhook_endpoint_create,
)
from orders.services import order_outcome_notification_kwargs
from tests.notifications.conftest import deliver, failed, place

REFUSED_URLS = [
    # loopback
    "http://localhost/hooks",
    "http://localhost:8000/hooks",
    "http://127.0.0.1/hooks",
    "http://127.8.9.10:8080/hooks",
    "http://[::1]/hooks",
    "http://[::ffff:127.0.0.1]/hooks",  # IPv4-mapped IPv6
    "http://[2002:7f00:1::1]/hooks",  # 6to4 around 127.0.0.1
    # unspecified
    "http://0.0.0.0/hooks",
    "http://[::]/hooks",
    # link-local, with the cloud metadata service
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/hooks",
    # private
    "http://10.0.0.5/hooks",
    "http://10.255.255.255/hooks",
    "http://172.16.0.1/hooks",
    "http://172.31.255.254/hooks",
    "http://192.168.1.10/hooks",
    "https://[fc00::1]/hooks",
    "https://[fd12:3456:789a::1]/hooks",
    "http://[::ffff:10.0.0.1]/hooks",
    # shared (carrier-grade NAT), multicast, reserved, broadcast, documentation
    "http://100.64.0.1/hooks",
    "http://224.0.0.251/hooks",
    "http://[ff02::1]/hooks",
    "http://240.0.0.1/hooks",
    "http://255.255.255.255/hooks",
    "http://192.0.2.10/hooks",
    "http://[2001:db8::1]/hooks",
]


@pytest.fixture
def private_urls_refused(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = False
    return settings


class FakeDns:
    """Answers for made-up host names; every other name goes to the real resolver."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        self.lookups: list[str] = []
        self._real_getaddrinfo = socket.getaddrinfo

    def __setitem__(self, host: str, addresses: list[str]) -> None:
        self.answers[host] = addresses

    def getaddrinfo(self, host, port, *args, **kwargs):
        if host not in self.answers:
            return self._real_getaddrinfo(host, port, *args, **kwargs)
        self.lookups.append(host)
        if not self.answers[host]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (
                socket.AF_INET6 if ":" in address else socket.AF_INET,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                "",
                (address, port),
            )
            for address in self.answers[host]
        ]


@pytest.fixture
def fake_dns(monkeypatch) -> FakeDns:
    dns = FakeDns()
    monkeypatch.setattr(socket, "getaddrinfo", dns.getaddrinfo)
    return dns


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_non_public_addresses_are_refused(url, private_urls_refused):
    with pytest.raises(DestinationRefused, match="public addresses"):
        resolve_destination(url)


def test_localhost_is_refused_for_what_it_resolves_to(private_urls_refused):
    with pytest.raises(DestinationRefused) as refused:
        resolve_destination("http://localhost:8000/hooks")

    assert "127.0.0.1" in str(refused.value) or "::1" in str(refused.value)


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/hooks", "file:///etc/passwd", "gopher://example.com/", "example.com/hooks"],
)
def test_only_http_and_https_are_allowed(url, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = True  # the scheme check stays

    with pytest.raises(DestinationRefused, match="Only http and https"):
        resolve_destination(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http:///hooks", "no host"),
        ("http://example.com:99999/hooks", "Not a valid URL"),
        ("https://user:password@example.com/hooks", "Credentials"),
    ],
)
def test_malformed_urls_are_refused(url, message, private_urls_refused):
    with pytest.raises(DestinationRefused, match=message):
        resolve_destination(url)


def test_a_name_resolving_to_any_private_address_is_refused(private_urls_refused, fake_dns):
    fake_dns["rebind.example.test"] = ["93.184.216.34", "10.0.0.1"]

    with pytest.raises(DestinationRefused, match=r"10\.0\.0\.1"):
        resolve_destination("https://rebind.example.test/hooks")


def test_an_unresolvable_name_is_refused(private_urls_refused, fake_dns):
    fake_dns["nowhere.example.test"] = []

    with pytest.raises(DestinationUnresolvable, match="could not be resolved"):
        resolve_destination("https://nowhere.example.test/hooks")


def test_public_addresses_are_allowed_and_pinned(private_urls_refused, fake_dns):
    fake_dns["hooks.example.test"] = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]

    destination = resolve_destination("https://hooks.example.test/in?tenant=7#ignored")

    assert destination.address == "93.184.216.34"
    assert destination.hostname == "hooks.example.test"
    assert destination.host_header == "hooks.example.test"
    assert destination.port == 443
    assert destination.target == "/in?tenant=7"
    assert resolve_destination("http://8.8.8.8:8080/").host_header == "8.8.8.8:8080"
    assert resolve_destination("https://[2606:4700:4700::1111]/").address == "2606:4700:4700::1111"


def test_the_setting_allows_private_addresses(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = True

    assert resolve_destination("http://127.0.0.1:9000/hooks").address == "127.0.0.1"
    assert resolve_destination("http://[::1]:9000/hooks").address == "::1"


@pytest.mark.parametrize("url", ["http://localhost/hooks", "http://169.254.169.254/", "ftp://x.io"])
def test_the_service_refuses_with_a_url_field_error(url, customer, private_urls_refused):
    with pytest.raises(InvalidWebhookEndpoint) as refused:
        webhook_endpoint_create(user=customer, url=url, events=["*"])

    assert list(refused.value.errors) == ["url"]
    assert not WebhookEndpoint.objects.exists()


def test_the_address_is_checked_again_at_delivery(
    catalog, customer, receiver, webhook_settings, fake_dns
):
    """DNS rebinding: public when the endpoint was created, loopback when the event is sent."""
    host = "rebinding.example.test"
    fake_dns[host] = ["93.184.216.34"]
    webhook_settings.WEBHOOKS_ALLOW_PRIVATE_URLS = False
    endpoint = webhook_endpoint_create(
        user=customer, url=f"http://{host}:{receiver.port}/hooks", events=["*"]
    )
    fake_dns[host] = ["127.0.0.1"]
    notification_send(**order_outcome_notification_kwargs(order=failed(place(customer))))
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)

    deliver(delivery)

    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.FAILED  # refused for good, not retried
    (attempt,) = delivery.attempts.all()
    assert attempt.status_code is None
    assert "127.0.0.1" in attempt.error
    assert receiver.requests == []


def test_a_delivery_connects_to_the_address_it_checked(
    catalog, customer, receiver, webhook_settings, fake_dns
):
    """One lookup per attempt, and the request goes to that address with the URL's host name."""
    host = "hooks.example.test"
    fake_dns[host] = ["127.0.0.1"]
    endpoint = webhook_endpoint_create(
        user=customer, url=f"http://{host}:{receiver.port}/hooks", events=["*"]
    )
    lookups_at_creation = len(fake_dns.lookups)
    notification_send(**order_outcome_notification_kwargs(order=failed(place(customer))))

    deliver(WebhookDelivery.objects.get(endpoint=endpoint))

    assert len(receiver.requests) == 1
    assert receiver.requests[0].headers["Host"] == f"{host}:{receiver.port}"
    assert len(fake_dns.lookups) - lookups_at_creation == 1
