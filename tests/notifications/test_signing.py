"""The signature scheme, checked with the exact verification snippet documented for receivers."""

import hashlib
import hmac
import inspect
import re
import time
from pathlib import Path

import pytest

from notifications import signing
from notifications.services import webhook_secret_generate

README = Path(signing.__file__).with_name("README.md")


def documented_verify_signature():
    """The verify_signature function as the README shows it, executed on its own."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    (snippet,) = [block for block in blocks if "def verify_signature" in block]
    namespace: dict = {}
    exec(compile(snippet, str(README), "exec"), namespace)  # noqa: S102 (our own README)
    return snippet, namespace["verify_signature"]


SECRET = "whsec_test-secret"
BODY = b'{"created":1767225600,"data":{},"id":"evt_1","type":"order.confirmed"}'


def test_the_readme_snippet_is_the_code():
    snippet, _ = documented_verify_signature()

    assert inspect.getsource(signing.verify_signature) in snippet


def test_a_signature_is_hmac_sha256_of_timestamp_dot_body():
    header = signing.sign_payload(SECRET, BODY, timestamp=1767225600)

    expected = hmac.new(SECRET.encode(), b"1767225600." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1767225600,v1={expected}"


def test_the_documented_function_accepts_a_fresh_signature():
    _, verify = documented_verify_signature()

    assert verify(SECRET, signing.sign_payload(SECRET, BODY), BODY)
    assert verify(SECRET, signing.sign_payload(SECRET, BODY, timestamp=time.time() - 290), BODY)


@pytest.mark.parametrize(
    ("case", "secret", "header_body", "body", "age"),
    [
        ("tampered body", SECRET, BODY, BODY.replace(b"confirmed", b"cancelled"), 0),
        ("wrong secret", "whsec_other", BODY, BODY, 0),
        ("older than 5 minutes", SECRET, BODY, BODY, 301),
        ("from the future", SECRET, BODY, BODY, -301),
    ],
)
def test_the_documented_function_refuses(case, secret, header_body, body, age):
    _, verify = documented_verify_signature()
    header = signing.sign_payload(secret, header_body, timestamp=int(time.time()) - age)

    assert not verify(SECRET, header, body), case


@pytest.mark.parametrize(
    "header",
    ["", "garbage", "t=,v1=", "v1=abc", "t=abc,v1=abc", "t=\u00b2,v1=x", "t=1,v1=\u00e9", None],
)
def test_malformed_headers_are_refused_not_errors(header):
    _, verify = documented_verify_signature()

    assert verify(SECRET, header, BODY) is False


def test_a_timestamp_swapped_into_an_old_signature_is_refused():
    old = signing.sign_payload(SECRET, BODY, timestamp=int(time.time()) - 3600)
    signature = old.split(",")[1]

    assert not signing.verify_signature(SECRET, f"t={int(time.time())},{signature}", BODY)


def test_one_matching_signature_among_several_suffices():
    now = int(time.time())
    header = signing.sign_payload(SECRET, BODY, timestamp=now)
    other = signing.sign_payload("whsec_rotated", BODY, timestamp=now).split(",")[1]

    assert signing.verify_signature(SECRET, f"{header},{other}", BODY)
    assert signing.verify_signature("whsec_rotated", f"{header},{other}", BODY)


def test_secrets_are_prefixed_random_and_unique():
    secrets = {webhook_secret_generate() for _ in range(20)}

    assert len(secrets) == 20
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(secret) == len("whsec_") + 43  # token_urlsafe(32)
