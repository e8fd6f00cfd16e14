"""Helpers for the hostile-client tests: raw sockets, metrics, log lines and RSS of a
real receiver process (tests/harness.ReceiverProcess). Loopback only."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import ReceiverProcess, event_body, signed_headers

MIB = 1024 * 1024


def metric(server: ReceiverProcess, name: str, **labels: str) -> float:
    """The value of one sample on the admin listener's /metrics (0 when absent)."""
    text = httpx.get(f"{server.admin_url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def refused(server: ReceiverProcess, reason: str, listener: str = "ingress") -> float:
    return metric(server, "bighub_siem_edge_refused_total", listener=listener, reason=reason)


def rejected(server: ReceiverProcess, reason: str) -> float:
    return metric(server, "bighub_siem_requests_rejected_total", reason=reason)


class LogTail:
    """The receiver's JSON log lines written after this object was made."""

    def __init__(self, server: ReceiverProcess) -> None:
        self.path: Path = server.stderr_path
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def text(self) -> str:
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            return fh.read().decode("utf-8", "replace")

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def events(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            line
            for line in self.lines()
            if line.get("event") == event and all(line.get(k) == v for k, v in fields.items())
        ]

    def wait(self, event: str, count: int, timeout: float = 5.0, **fields: Any) -> list[Any]:
        """Lines are buffered (flushed every 250 ms): wait for ``count`` of them."""
        deadline = time.monotonic() + timeout
        found = self.events(event, **fields)
        while len(found) < count and time.monotonic() < deadline:
            time.sleep(0.05)
            found = self.events(event, **fields)
        return found

    def assert_no_errors(self) -> None:
        """No traceback and no error-level line: no client behaviour is an error of ours."""
        text = self.text()
        assert "Traceback" not in text
        bad = [x for x in self.lines() if x.get("level") in ("error", "critical", "exception")]
        assert not bad, bad


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@contextmanager
def rss_growth(server: ReceiverProcess) -> Iterator[list[int]]:
    """Samples the receiver's RSS every 20 ms; yields [growth in bytes] filled at exit."""
    assert server.proc is not None
    pid = server.proc.pid
    base = rss_kib(pid)
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            stop.wait(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    result: list[int] = []
    try:
        yield result
    finally:
        stop.set()
        t.join()
        result.append((max(peak[0], rss_kib(pid)) - base) * 1024)


class ValidSender:
    """Posts valid signed events in a thread while an attack runs; records the answers."""

    def __init__(self, server: ReceiverProcess, prefix: str, interval: float = 0.05) -> None:
        self.server = server
        self.prefix = prefix
        self.interval = interval
        self.statuses: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            body = event_body(f"{self.prefix}-{n}")
            # A new connection per delivery: an idle keep-alive connection may be closed
            # by the server at any moment (the cap evicts the longest idle first), which
            # HTTP allows and a pooled client would report as a failed POST.
            headers = {**signed_headers(body), "Connection": "close"}
            try:
                resp = httpx.post(self.server.url, content=body, headers=headers, timeout=10)
                self.statuses.append(resp.status_code)
            except httpx.HTTPError as exc:
                self.errors.append(type(exc).__name__)
            self._stop.wait(self.interval)

    def __enter__(self) -> ValidSender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # At least a few answers, even when the attack was over before they came.
        deadline = time.monotonic() + 10
        while len(self.statuses) + len(self.errors) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        self._thread.join(timeout=30)

    def assert_all_accepted(self, at_least: int = 3) -> None:
        assert not self.errors, self.errors
        assert len(self.statuses) >= at_least
        assert set(self.statuses) == {202}, self.statuses


def connect(server: ReceiverProcess, timeout: float = 5.0) -> socket.socket:
    ingress = server.cfg["ingress"]
    sock = socket.create_connection((ingress["host"], ingress["port"]), timeout=timeout)
    return sock


def read_response(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes (or the timeout)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    return data


def readable(sock: socket.socket, timeout: float = 0.0) -> bool:
    """poll(), not select(): descriptors above 1023 are fine."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def wait_closed(socks: list[socket.socket], timeout: float) -> set[socket.socket]:
    """Wait until the server closed every socket; return the ones still open."""
    poller = select.poll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while by_fd and time.monotonic() < deadline:
        for fd, _ in poller.poll(200):
            try:
                data = by_fd[fd].recv(1)
            except ConnectionResetError:
                data = b""
            assert data == b"", data  # closed without an answer: no request was made
            poller.unregister(fd)
            del by_fd[fd]
    return set(by_fd.values())


def read_responses(sock: socket.socket, count: int, timeout: float = 5.0) -> list[bytes]:
    """``count`` complete responses (head + Content-Length body) from one connection."""
    sock.settimeout(timeout)
    data = b""
    found: list[bytes] = []
    while len(found) < count:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(rest) >= length:
                found.append(head + sep + rest[:length])
                data = rest[length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, (found, data)
        data += chunk
    return found


def read_one(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """One complete response from a kept-alive connection."""
    return read_responses(sock, 1, timeout)[0]


def status_of(response: bytes) -> int | None:
    if not response.startswith(b"HTTP/1.1 "):
        return None
    return int(response[9:12])


def json_body(response: bytes) -> dict[str, Any]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    data: dict[str, Any] = json.loads(body)
    return data


def in_parallel(fn: Callable[[int], Any], count: int) -> list[Any]:
    with ThreadPoolExecutor(max_workers=min(count, 64)) as pool:
        return list(pool.map(fn, range(count)))
