"""What every benchmark here needs: a throw-away PostgreSQL database, migrations, percentiles."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
LOCALHOST = "127.0.0.1"
POSTGRES_ADMIN_DSN = f"host={LOCALHOST} port=5432 user=postgres dbname=postgres connect_timeout=3"


def postgres_answers() -> bool:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN_DSN):
            return True
    except Exception:  # any failure (no driver, no server, auth) means: no PostgreSQL
        return False


@contextlib.contextmanager
def postgres_database(name: str) -> Iterator[str]:
    """Yield the DATABASE_URL of a fresh PostgreSQL database `name`; drop it afterwards."""
    import psycopg

    def admin(statement: str) -> None:
        with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as connection:
            connection.execute(statement)

    admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin(f"CREATE DATABASE {name}")
    try:
        yield f"postgres://postgres@{LOCALHOST}:5432/{name}"
    finally:
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def migrate(env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "--verbosity", "0"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode:
        raise SystemExit(f"migrate failed:\n{result.stdout}\n{result.stderr}")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0
