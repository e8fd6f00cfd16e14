"""A real S3 protocol server for tests: ``moto_server`` in a subprocess, plus helpers.

Import the fixtures by name into a test module::

    from tests.services.moto import moto_server, s3_bucket
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import require_service
from tests.harness import free_port

REGION = "us-east-1"
ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"


def moto_binary() -> str | None:
    """``moto_server`` next to this interpreter, else on PATH."""
    beside = Path(sys.executable).with_name("moto_server")
    return str(beside) if beside.exists() else shutil.which("moto_server")


@dataclass
class MotoServer:
    """A running ``moto_server``; ``endpoint`` is its base URL."""

    proc: subprocess.Popen[bytes]
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def env(self) -> dict[str, str]:
        """Environment for a subprocess using the boto3 credential chain against moto."""
        return {
            **os.environ,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }


@contextlib.contextmanager
def run_moto(port: int | None = None, timeout: float = 30.0) -> Iterator[MotoServer]:
    """Start ``moto_server -H 127.0.0.1 -p PORT``, wait until it answers, stop it by pid."""
    binary = moto_binary()
    if binary is None:
        raise FileNotFoundError("moto_server not found (pip install 'moto[server]')")
    port = port or free_port()
    proc = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = MotoServer(proc, port)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {proc.returncode}")
            try:
                httpx.get(f"{server.endpoint}/moto-api/", timeout=1.0)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not answer") from None
                time.sleep(0.05)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto server for the session; tests isolate themselves with their own buckets."""
    require_service(moto_binary() is not None, "moto_server", "pip install 'moto[server]'")
    with run_moto() as server:
        yield server


@pytest.fixture
def s3_bucket(moto_server: MotoServer) -> Callable[..., str]:
    """Factory: ``s3_bucket(object_lock=False)`` creates a fresh bucket, returns its name."""

    def make(*, object_lock: bool = False) -> str:
        name = f"t-{uuid.uuid4().hex[:20]}"
        moto_server.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
        return name

    return make
