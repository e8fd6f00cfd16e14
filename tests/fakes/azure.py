"""Entra ID + Logs Ingestion emulators served over HTTPS with a test CA.

The real ``azure-identity`` and ``azure-monitor-ingestion`` clients talk to them
unchanged: the sink is configured with ``authority_host`` / ``endpoint`` pointing here,
``ca_file`` naming the test CA, and ``validate_authority = false`` (MSAL would otherwise
ask login.microsoftonline.com whether 127.0.0.1 is a Microsoft authority).

The DCR's stream declarations are read from deploy/sentinel/sentinel.json, so a sink that
drifts from the template fails here as it would in Azure.

In a thread: the ``azure`` fixture. As a process (the benchmark)::

    python -m tests.fakes.azure --login-port N --dce-port M --tls-dir DIR
"""

from __future__ import annotations

import argparse
import gc
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.types import ASGIApp

from tests.fakes.entra import EntraEmulator, TokenBook
from tests.fakes.logs_ingestion import IngestionEmulator
from tests.fakes.tls import TlsFiles, make_tls_files
from tests.harness import ROOT, free_port

TEMPLATE = ROOT / "deploy" / "sentinel" / "sentinel.json"
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "0b5d2f3e-6c1a-4e8b-9f0a-1c2d3e4f5a6b"
CLIENT_SECRET = "test-client-secret-0123456789abcdef"
DCR_ID = "dcr-" + "0123456789abcdef" * 2


def stream_declarations(template: Path = TEMPLATE) -> dict[str, dict[str, str]]:
    """stream -> column -> type, from the DCR resource of the ARM template."""
    data = json.loads(template.read_text())
    for resource in data["resources"]:
        if resource["type"] == "Microsoft.Insights/dataCollectionRules":
            declared = resource["properties"]["streamDeclarations"]
            return {
                stream: {c["name"]: c["type"] for c in body["columns"]}
                for stream, body in declared.items()
            }
    raise LookupError(f"no data collection rule in {template}")


class _Served:
    """One ASGI app under uvicorn with TLS, in a daemon thread."""

    def __init__(self, app: ASGIApp, name: str, tls: TlsFiles, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            ssl_certfile=str(tls.cert),
            ssl_keyfile=str(tls.key),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"{self._thread.name} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@dataclass
class Azure:
    """Both emulators, one app registration with a secret and its role on the DCR."""

    tls: TlsFiles
    book: TokenBook
    entra: EntraEmulator
    dce: IngestionEmulator
    login: _Served
    ingest: _Served

    @property
    def principal(self) -> str:
        return self.entra.apps[CLIENT_ID].object_id

    def sink_config(self, **extra: Any) -> dict[str, Any]:
        """A ``[[sinks]]`` table for this emulator (client secret credential)."""
        return {
            "name": "sentinel",
            "type": "sentinel",
            "endpoint": self.ingest.url,
            "dcr_immutable_id": DCR_ID,
            "tenant_id": TENANT_ID,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "authority_host": self.login.url,
            "validate_authority": False,
            "ca_file": str(self.tls.ca),
            "connect_timeout_seconds": 2.0,
            "read_timeout_seconds": 10.0,
            **extra,
        }

    def stop(self) -> None:
        # Error responses of the clients sit in reference cycles that hold their pooled
        # socket open until the collector runs; uvicorn would wait for them on shutdown.
        gc.collect()
        self.ingest.stop()
        self.login.stop()


def start_azure(
    directory: Path,
    *,
    keep_rows: bool = True,
    login_port: int | None = None,
    dce_port: int | None = None,
) -> Azure:
    tls = make_tls_files(directory, ["127.0.0.1", "localhost"])
    book = TokenBook()
    entra = EntraEmulator(book)
    entra.register(TENANT_ID, CLIENT_ID, secrets={CLIENT_SECRET})
    dce = IngestionEmulator(book, {DCR_ID: stream_declarations()}, keep_rows=keep_rows)
    dce.grant(entra.apps[CLIENT_ID].object_id, DCR_ID)
    login = _Served(entra.app, "entra-emulator", tls, login_port)
    ingest = _Served(dce.app, "ingestion-emulator", tls, dce_port)
    entra.base_url = login.url
    login.start()
    try:
        ingest.start()
    except RuntimeError:
        login.stop()
        raise
    return Azure(tls, book, entra, dce, login, ingest)


@pytest.fixture
def azure(tmp_path: Path) -> Iterator[Azure]:
    """Both emulators running, the app allowed to post to the DCR."""
    emulator = start_azure(tmp_path / f"azure-{uuid.uuid4().hex[:6]}")
    try:
        yield emulator
    finally:
        emulator.stop()


def main() -> None:  # pragma: no cover - used by the benchmark
    parser = argparse.ArgumentParser(description="Run the Entra ID + Logs Ingestion emulators.")
    parser.add_argument("--login-port", type=int, required=True)
    parser.add_argument("--dce-port", type=int, required=True)
    parser.add_argument("--tls-dir", type=Path, required=True)
    args = parser.parse_args()
    emulator = start_azure(
        args.tls_dir, keep_rows=False, login_port=args.login_port, dce_port=args.dce_port
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        emulator.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
