"""Test helpers: free ports, config files, signed requests, a real receiver process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from receiver import signatures
from receiver.envelope import category_of
from receiver.store import NewEvent

SECRET = "test-secret-0123456789abcdef"
ADMIN_TOKEN = "test-admin-token-0123456789"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def to_toml(data: Mapping[str, Any]) -> str:
    """A small TOML writer for test configs: sections, arrays of tables, scalars."""
    lines: list[str] = []
    for key, value in data.items():
        if not isinstance(value, (dict, list)) or (
            isinstance(value, list) and not all(isinstance(x, dict) for x in value)
        ):
            lines.append(f"{key} = {_value(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            lines.extend(f"{k} = {_value(v)}" for k, v in value.items())
        elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            for item in value:
                lines.append(f"\n[[{key}]]")
                lines.extend(f"{k} = {_value(v)}" for k, v in item.items())
    return "\n".join(lines) + "\n"


def base_config(tmp: Path, **overrides: Any) -> dict[str, Any]:
    """A complete config dict: SQLite in ``tmp``, stdout sink, free ports."""
    cfg: dict[str, Any] = {
        "ingress": {"host": "127.0.0.1", "port": free_port(), "secrets": [SECRET]},
        "store": {"url": f"sqlite:///{tmp / 'spool.db'}"},
        "admin": {"host": "127.0.0.1", "port": free_port(), "token": ADMIN_TOKEN},
        "log": {"format": "json", "level": "info"},
        "sinks": [{"name": "console", "type": "stdout"}],
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def write_config(path: Path, cfg: Mapping[str, Any]) -> Path:
    path.write_text(to_toml(cfg), encoding="utf-8")
    return path


def signed_headers(body: bytes, *, secret: str = SECRET, ts: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    return {
        "Content-Type": "application/json",
        "X-BIGHUB-Timestamp": str(ts),
        "X-BIGHUB-Signature": signatures.signature_header(secret, ts, body),
    }


def event_body(event_id: str, event_type: str = "decision_event.created", **extra: Any) -> bytes:
    return json.dumps(
        {
            "event_id": event_id,
            "event_type": event_type,
            "created_at": "2026-11-24T08:00:00Z",
            **extra,
        },
        separators=(",", ":"),
    ).encode()


def stored_event(
    event_id: str,
    *,
    sinks: tuple[str, ...],
    event_type: str = "decision_event.created",
    body: bytes = b"{}",
    delivery_id: str | None = None,
    received_at: float | None = None,
) -> NewEvent:
    """An event as ingress hands it to the store (for tests that fill a spool directly)."""
    return NewEvent(
        source="bighub",
        event_id=event_id,
        id_origin="body.event_id",
        event_type=event_type,
        category=category_of(event_type),
        occurred_at=None,
        received_at=time.time() if received_at is None else received_at,
        delivery_id=delivery_id,
        body=body,
        signature=None,
        timestamp=None,
        sinks=sinks,
    )


class ReceiverProcess:
    """``python -m receiver serve`` in a subprocess, stdout captured to a file.

    ``role`` is passed as ``serve --role``; a ``dispatch`` process has no ingress
    listener, so its health is read from the admin listener.
    """

    def __init__(
        self,
        tmp: Path,
        cfg: Mapping[str, Any],
        env: Mapping[str, str] | None = None,
        role: str = "all",
    ):
        self.tmp = tmp
        self.cfg = cfg
        self.role = role
        self.config_path = write_config(tmp / "config.toml", cfg)
        self.stdout_path = tmp / "stdout.jsonl"
        self.stderr_path = tmp / "stderr.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        i = self.cfg["ingress"]
        return f"http://{i['host']}:{i['port']}{i.get('path', '/webhooks/bighub')}"

    @property
    def base_url(self) -> str:
        i = self.cfg["ingress"]
        return f"http://{i['host']}:{i['port']}"

    @property
    def admin_url(self) -> str:
        a = self.cfg["admin"]
        return f"http://{a['host']}:{a['port']}"

    def start(self, timeout: float = 20.0) -> ReceiverProcess:
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            role = [] if self.role == "all" else ["--role", self.role]
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "receiver",
                    "serve",
                    "--config",
                    str(self.config_path),
                    *role,
                ],
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=self.tmp,
            )
        health = self.admin_url if self.role == "dispatch" else self.base_url
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"receiver exited: {self.stderr_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{health}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError("receiver did not become healthy")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def exported(self) -> list[dict[str, Any]]:
        if not self.stdout_path.exists():
            return []
        # Records end with "\n" only: str.splitlines() would also split inside a payload
        # holding a raw U+2028, which JSON allows in strings.
        data = self.stdout_path.read_bytes()
        return [json.loads(line) for line in data.split(b"\n") if line.strip()]

    def wait_exported(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.exported()
            if len(got) >= count:
                return got
            time.sleep(0.05)
        return self.exported()

    def __enter__(self) -> ReceiverProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SignedLoad:
    """Signed webhooks from several threads to ``url`` until stopped (bounded per thread).

    ``acknowledged`` holds the ids of the events answered 2xx: those the receiver promised
    to keep. Events that got no answer are not in it (BIGHUB would retry them).
    """

    def __init__(
        self, url: str, *, workers: int, prefix: str, per_worker: int = 5000, **payload: Any
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.per_worker = per_worker
        self.payload = payload
        self.acknowledged: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, args=(w,), name=f"load-{w}") for w in range(workers)
        ]

    def _send(self, worker: int) -> None:
        with httpx.Client(timeout=5) as client:
            for n in range(self.per_worker):  # bounded; a kill usually ends the run sooner
                if self._stop.is_set():
                    return
                event_id = f"{self.prefix}-{worker}-{n}"
                body = event_body(event_id, **self.payload)
                try:
                    resp = client.post(self.url, content=body, headers=signed_headers(body))
                except httpx.HTTPError:
                    continue  # no answer: BIGHUB would retry; nothing was promised
                if resp.status_code in (200, 202):
                    with self._lock:
                        self.acknowledged.add(event_id)

    def start(self) -> SignedLoad:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> set[str]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        with self._lock:
            return set(self.acknowledged)
