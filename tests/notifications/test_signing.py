"""Standard Webhooks signatures, checked against the spec's reference library `standardwebhooks`
as a receiver uses it, and the verification snippet documented for receivers."""

import base64
import re
import secrets
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import standardwebhooks.webhooks
from standardwebhooks import Webhook, WebhookVerificationError

from notifications import signing

README = Path(signing.__file__).with_name("README.md")

BODY = b'{"created":1767225600,"data":{},"id":"evt_1","type":"order.confirmed"}'
EVENT_ID = "evt_0123456789abcdef0123456789abcdef"


def documented(function_name: str):
    """A function as notifications/README.md shows it, executed on its own."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    (snippet,) = [block for block in blocks if f"def {function_name}(" in block]
    namespace: dict = {}
    exec(compile(snippet, str(README), "exec"), namespace)  # noqa: S102 (our own README)
    return namespace[function_name]


def receiver_clock_ahead(monkeypatch, by: timedelta) -> None:
    """The receiving library's clock runs `by` later: a captured request presented later."""

    class Later(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) + by

    monkeypatch.setattr(standardwebhooks.webhooks, "datetime", Later)


def test_the_specs_published_example_signs_the_same():
    # The example of the reference libraries' test suites, computed independently of ours.
    signature = signing.sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        message_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp=1614265330,
        body=b'{"test": 2432232314}',
    )

    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_secrets_are_whsec_and_standard_base64_of_32_random_bytes():
    generated = {signing.secret_generate() for _ in range(50)}

    assert len(generated) == 50
    for secret in generated:
        assert secret.startswith("whsec_")
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        assert len(key) == 32
        assert signing.secret_key(secret) == key


def test_the_three_headers_of_one_attempt():
    headers = signing.signature_headers(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        message_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
        body=b'{"test": 2432232314}',
        timestamp=1614265330,
    )

    assert headers == {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }


def test_the_library_verifies_what_we_sign():
    secret = signing.secret_generate()
    headers = signing.signature_headers(secret, message_id=EVENT_ID, body=BODY)

    assert Webhook(secret).verify(BODY, headers) == {
        "created": 1767225600,
        "data": {},
        "id": "evt_1",
        "type": "order.confirmed",
    }
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5


def signed_now(secret: str, *, age: int = 0) -> dict[str, str]:
    return signing.signature_headers(
        secret, message_id=EVENT_ID, body=BODY, timestamp=int(time.time()) - age
    )


@pytest.mark.parametrize(
    ("case", "tamper"),
    [
        ("tampered body", lambda headers: (BODY.replace(b"confirmed", b"cancelled"), headers)),
        ("another id", lambda headers: (BODY, {**headers, "webhook-id": "evt_other"})),
        (
            "a fresh timestamp on an old signature",
            lambda headers: (BODY, {**headers, "webhook-timestamp": str(int(time.time()) + 1)}),
        ),
        ("no signature", lambda headers: (BODY, {**headers, "webhook-signature": ""})),
    ],
)
def test_the_library_refuses_a_tampered_request(case, tamper):
    secret = signing.secret_generate()
    body, headers = tamper(signed_now(secret))

    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


def test_the_library_refuses_another_endpoints_secret():
    headers = signed_now(signing.secret_generate())

    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(signing.secret_generate()).verify(BODY, headers)


@pytest.mark.parametrize(("age", "message"), [(301, "too old"), (-301, "too new")])
def test_the_library_refuses_a_timestamp_beyond_five_minutes(age, message):
    secret = signing.secret_generate()

    with pytest.raises(WebhookVerificationError, match=message):
        Webhook(secret).verify(BODY, signed_now(secret, age=age))
    assert Webhook(secret).verify(BODY, signed_now(secret, age=290))  # within the tolerance


def test_a_captured_request_presented_later_is_refused(monkeypatch):
    secret = signing.secret_generate()
    headers = signed_now(secret)
    receiver_clock_ahead(monkeypatch, timedelta(minutes=6))

    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(BODY, headers)


def test_the_documented_receiver_accepts_a_signed_request_and_refuses_the_rest():
    verified_event = documented("verified_event")
    secret = signing.secret_generate()
    headers = signed_now(secret)

    assert verified_event(secret, BODY, headers)["type"] == "order.confirmed"
    assert verified_event(secret, BODY + b" ", headers) is None
    assert verified_event(secret, BODY, signed_now(secret, age=400)) is None
    assert verified_event(signing.secret_generate(), BODY, headers) is None


@pytest.mark.parametrize(
    "signature", ["garbage", "v1", "v1,abc", "v1,a b", "v1,!!!!", "v2,abc=", "", "v1,"]
)
def test_malformed_headers_are_refused_by_the_documented_receiver_not_errors(signature):
    # The library raises ValueError (not its own error) for some malformed signatures.
    verified_event = documented("verified_event")
    secret = signing.secret_generate()
    headers = {**signed_now(secret), "webhook-signature": signature}

    assert verified_event(secret, BODY, headers) is None


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_" + secrets.token_urlsafe(32),  # the old form: URL-safe, unpadded
        "whsec_" + base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode(),  # "-" and "_"
        base64.b64encode(secrets.token_bytes(32)).decode(),  # no prefix
        "whsec_" + base64.b64encode(secrets.token_bytes(16)).decode(),  # too short
        "whsec_" + base64.b64encode(secrets.token_bytes(65)).decode(),  # too long
        "whsec_",
        "whsec_not base64!",
    ],
    ids=["url-safe", "dash-underscore", "no-prefix", "16-bytes", "65-bytes", "empty", "garbage"],
)
def test_a_secret_no_receiver_would_derive_the_same_key_from_is_refused(secret):
    with pytest.raises(signing.InvalidSecret):
        signing.secret_key(secret)


def test_a_url_safe_secret_derives_another_key_in_the_library():
    # Why secrets are strict standard base64: the library decodes leniently, dropping "-" and
    # "_", so a receiver holding the old form silently computes another key (or fails).
    key = b"\xfb\xff" * 16
    legacy = "whsec_" + base64.urlsafe_b64encode(key).decode()
    standard = "whsec_" + base64.b64encode(key).decode()
    headers = signing.signature_headers(standard, message_id=EVENT_ID, body=BODY)

    assert Webhook(standard).verify(BODY, headers)
    with pytest.raises((WebhookVerificationError, ValueError)):
        Webhook(legacy).verify(BODY, headers)


def test_an_id_with_a_full_stop_is_refused():
    with pytest.raises(ValueError, match="must not contain"):
        signing.sign(signing.secret_generate(), message_id="evt.1", timestamp=1, body=BODY)


def test_the_timestamp_is_whole_seconds_and_defaults_to_now():
    secret = signing.secret_generate()
    before = int(time.time())

    headers = signing.signature_headers(secret, message_id=EVENT_ID, body=BODY)

    assert headers["webhook-timestamp"].isdigit()
    assert before <= int(headers["webhook-timestamp"]) <= int(time.time())
