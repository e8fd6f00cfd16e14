"""PostgreSQL for tests: the server named by BIGHUB_SIEM_TEST_POSTGRES_URL.

Each test gets a schema of its own (the store's tables go to the first schema on
the ``search_path``, set through the URL's ``options``), dropped afterwards, so
parallel runs and other projects on the same server never collide.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.conftest import require_service

ENV = "BIGHUB_SIEM_TEST_POSTGRES_URL"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
HOW = f"start PostgreSQL and set {ENV} (default {DEFAULT_URL})"


def schema_url(url: str, schema: str) -> str:
    """``url`` with ``search_path`` set to ``schema`` (libpq ``options``)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}', safe='')}"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The server's URL; skips (fails under CI) when it cannot be reached."""
    url = os.environ.get(ENV, DEFAULT_URL)
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        require_service(False, "PostgreSQL", f"{HOW}; connecting failed: {type(exc).__name__}")
    return url


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A URL whose tables live in a fresh schema, dropped after the test."""
    import psycopg

    schema = f"bighub_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema_url(postgres_url, schema)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
