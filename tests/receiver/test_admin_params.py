"""Malformed admin parameters against a real receiver: JSON 4xx, never a 500 (issue 11).

Ids past SQLite's / PostgreSQL's 64-bit range used to overflow the driver, a deeply
nested body blew the JSON decoder's recursion, and both ended as text/plain 500s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.edge_support import MIB, LogTail, ValidSender, metric, rss_growth
from tests.harness import ADMIN_TOKEN, ReceiverProcess, base_config

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MAX_ID = 2**63 - 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReceiverProcess]:
    tmp = tmp_path_factory.mktemp("admin-params")
    with ReceiverProcess(tmp, base_config(tmp)) as proc:
        yield proc


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


BAD_QUERIES = [
    f"after={2**90}",
    f"after={MAX_ID + 1}",
    "after=-1",
    "after=1e3",
    "after=",
    "after=%EF%BC%91",  # a full-width digit: int() would take it
    "after=1_000",
    "limit=0",
    "limit=1001",
    f"limit={10**30}",
    "limit=ten",
    "sink=../../etc/passwd",
    "sink=" + "s" * 65,
]

BAD_BODIES = [
    _json({"ids": [2**90]}),
    _json({"ids": [-(2**90)]}),
    _json({"ids": [MAX_ID + 1]}),
    _json({"ids": [0]}),
    _json({"ids": [True]}),
    _json({"ids": [1.5]}),
    _json({"ids": "all"}),
    _json({"ids": list(range(1, 10_002))}),
    _json({"sink": 5}),
    _json({"sink": "a/b"}),
    _json({"everything": True}),
    _json([1, 2]),
    b"[" * 100_000 + b"]" * 100_000,  # deeper than any decoder recursion
    b'{"ids": [' * 50_000,
    b"\xff\xfe{}",  # not UTF-8
    b"{not json",
]


def _check(resp: httpx.Response, status: int, route: str, counts: dict[str, float]) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["error"]
    key = f"{route}|{status}"
    counts[key] = counts.get(key, 0) + 1


def test_malformed_admin_parameters_are_json_4xx(server: ReceiverProcess) -> None:
    """Every malformed query or body: a JSON 400 naming the parameter; one http line and
    one count each; no traceback; valid events accepted meanwhile; memory flat."""
    tail = LogTail(server)
    counts: dict[str, float] = {}
    before = {
        r: metric(
            server, "bighub_siem_http_requests_total", listener="admin", route=r, status="400"
        )
        for r in ("/admin/dead-letters", "/admin/dead-letters/retry", "/admin/dead-letters/purge")
    }
    admin = httpx.Client(base_url=server.admin_url, headers=AUTH, timeout=10)
    with admin, rss_growth(server) as growth, ValidSender(server, "during-admin") as valid:
        for query in BAD_QUERIES:
            resp = admin.get(f"/admin/dead-letters?{query}")
            _check(resp, 400, "/admin/dead-letters", counts)
        for path in ("/admin/dead-letters/retry", "/admin/dead-letters/purge"):
            for body in BAD_BODIES:
                _check(admin.post(path, content=body), 400, path, counts)
    for route, n in before.items():
        got = metric(
            server, "bighub_siem_http_requests_total", listener="admin", route=route, status="400"
        )
        assert got - n == counts[f"{route}|400"]
    lines = tail.wait("http", sum(counts.values()), listener="admin", status=400)
    assert len(lines) == sum(counts.values())
    assert all("?" not in line["path"] for line in lines)  # query strings are never logged
    valid.assert_all_accepted()
    assert growth[0] < 32 * MIB
    tail.assert_no_errors()


def test_admin_bodies_are_read_with_a_limit(server: ReceiverProcess) -> None:
    """A body over 1 MiB is a JSON 413, read no further than the limit."""
    resp = httpx.post(
        f"{server.admin_url}/admin/dead-letters/retry",
        headers=AUTH,
        content=b'{"ids": [' + b"1," * (MIB // 2) + b"1]}",
        timeout=10,
    )
    assert resp.status_code == 413
    assert resp.json()["error"] == "body_too_large"


def test_extreme_valid_parameters_answer_normally(server: ReceiverProcess) -> None:
    """The largest 64-bit id is valid: it just matches nothing."""
    with httpx.Client(base_url=server.admin_url, headers=AUTH, timeout=10) as admin:
        page = admin.get(f"/admin/dead-letters?after={MAX_ID}&limit=1000")
        assert page.status_code == 200
        assert page.json() == {"dead_letters": [], "next_after": None}
        retry = admin.post("/admin/dead-letters/retry", json={"ids": [MAX_ID], "sink": "console"})
        assert (retry.status_code, retry.json()) == (200, {"requeued": 0})
        purge = admin.post("/admin/dead-letters/purge", content=b"")
        assert purge.status_code == 200


@pytest.mark.parametrize(
    ("listener", "method", "path", "status"),
    [
        ("admin", "GET", "/nowhere", 404),
        ("admin", "DELETE", "/admin/dead-letters", 405),
        ("admin", "GET", "/admin/dead-letters", 401),  # no token
        ("ingress", "GET", "/nowhere", 404),
        ("ingress", "POST", "/healthz", 405),
        ("ingress", "GET", "/webhooks/bighub", 405),
    ],
)
def test_every_error_is_json(
    server: ReceiverProcess, listener: str, method: str, path: str, status: int
) -> None:
    """404 / 405 / 401 on either listener are JSON with an error code, never text/plain."""
    base = server.admin_url if listener == "admin" else server.base_url
    resp = httpx.request(method, base + path, timeout=10)
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["error"]
