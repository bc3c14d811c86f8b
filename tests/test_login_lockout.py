"""Every login path is locked after repeated failures: per address, per username, across
processes, whatever X-Forwarded-For says and whether Redis answers or not."""

import pytest
import requests
from django.test import Client

from tests.processes import web_process

WRONG = "not-the-password"
PATHS = ["/api/auth/token/", "/accounts/login/", "/admin/login/"]


@pytest.fixture
def admin_user(django_user_model):
    # Staff, so that the admin's login form accepts the right password.
    return django_user_model.objects.create_user(
        username="alice", password="alice-password", is_staff=True
    )


def login(path: str, username: str, password: str, *, address: str, forwarded: str = ""):
    headers = {"REMOTE_ADDR": address}
    if forwarded:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded
    body = {"username": username, "password": password}
    if path.startswith("/api/"):
        return Client().post(path, body, content_type="application/json", **headers)
    return Client().post(path, {**body, "next": "/api/"}, **headers)


def accepted(path: str, response) -> bool:
    # The token endpoint answers a token; the login forms redirect to `next`.
    return response.status_code == (200 if path.startswith("/api/") else 302)


@pytest.mark.django_db
@pytest.mark.parametrize("path", PATHS)
def test_the_right_password_is_accepted_before_any_failure(path, admin_user):
    assert accepted(path, login(path, "alice", "alice-password", address="198.51.100.1"))


@pytest.mark.django_db
@pytest.mark.parametrize("path", PATHS)
def test_thirty_wrong_passwords_then_the_right_one_is_refused(path, admin_user):
    # Each guess forges another X-Forwarded-For: the lockout counts the real address.
    codes = [
        login(path, "alice", WRONG, address="198.51.100.1", forwarded=f"10.0.{n}.1").status_code
        for n in range(30)
    ]
    right = login(path, "alice", "alice-password", address="198.51.100.1", forwarded="10.9.9.9")
    assert not accepted(path, right)
    assert right.status_code == 429
    assert 429 in codes


@pytest.mark.django_db
@pytest.mark.parametrize("path", PATHS)
def test_a_username_is_locked_whatever_address_the_guesses_come_from(path, admin_user):
    for n in range(30):
        login(path, "alice", WRONG, address=f"198.51.100.{n + 1}")
    right = login(path, "alice", "alice-password", address="203.0.113.50")
    assert right.status_code == 429


@pytest.mark.django_db
def test_an_address_is_locked_whatever_usernames_it_tries(admin_user):
    for n in range(30):
        login("/api/auth/token/", f"user{n}", WRONG, address="198.51.100.7")
    locked = login("/api/auth/token/", "alice", "alice-password", address="198.51.100.7")
    assert locked.status_code == 429
    assert "detail" in locked.json()
    # Another address, the same user: not locked by someone else's guesses at other names.
    assert accepted(
        "/api/auth/token/", login("/api/auth/token/", "alice", "alice-password", address="::1")
    )


@pytest.mark.django_db
def test_the_lockout_holds_while_redis_is_down(admin_user, settings):
    # The API throttles open with Redis down; the lockout lives in the database and does not.
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    for _ in range(30):
        login("/api/auth/token/", "alice", WRONG, address="198.51.100.9")
    right = login("/api/auth/token/", "alice", "alice-password", address="198.51.100.9")
    assert right.status_code == 429


@pytest.mark.django_db(transaction=True)
def test_the_lockout_holds_across_processes(admin_user, tmp_path, settings):
    """Guesses against a second Django process (gunicorn) lock the login in this one."""
    with web_process(broker_url=settings.CELERY_BROKER_URL, log_path=tmp_path / "web.log") as web:
        codes = [
            requests.post(
                f"{web.url}/api/auth/token/",
                json={"username": "alice", "password": WRONG},
                headers={"X-Forwarded-For": f"10.1.{n}.1"},
                timeout=10,
            ).status_code
            for n in range(30)
        ]
        assert codes[0] == 400 and codes[-1] == 429, codes
        for path in PATHS:
            assert login(path, "alice", "alice-password", address="127.0.0.1").status_code == 429
        # ... and the other way round: the second process sees the lockout on its login form.
        browser = requests.Session()
        browser.get(f"{web.url}/accounts/login/", timeout=10)  # the CSRF cookie
        response = browser.post(
            f"{web.url}/accounts/login/",
            data={
                "username": "alice",
                "password": "alice-password",
                "csrfmiddlewaretoken": browser.cookies["csrftoken"],
            },
            allow_redirects=False,
            timeout=10,
        )
        assert response.status_code == 429
