"""An ASGI app served by uvicorn on a daemon thread, on a free loopback port (the fakes)."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from tests.harness import free_port

__all__ = ["ThreadedServer"]


class ThreadedServer:
    """``start()`` serves ``app`` on 127.0.0.1:``port`` until ``stop()``."""

    def __init__(self, app: Any, name: str) -> None:
        self.app = app
        self.name = name
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, **options: Any) -> int:
        """Serve (``options`` go to ``uvicorn.Config``, e.g. TLS files); returns the port."""
        self.port = free_port()
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            **options,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=self.name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"{self.name} did not start")
            time.sleep(0.01)
        return self.port

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = self._thread = None
