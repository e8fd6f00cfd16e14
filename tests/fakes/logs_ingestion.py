"""An Azure Monitor Logs Ingestion API emulator (Starlette), from Microsoft's published reference.

What it does, as Microsoft documents the API (REST reference "Logs Ingestion - Upload",
the Logs Ingestion API overview and tutorials, the service limits page):

- ``POST {endpoint}/dataCollectionRules/{dcrImmutableId}/streams/{streamName}
  ?api-version=2023-01-01`` (``2021-11-01-preview`` is accepted too), ``Authorization:
  Bearer <Entra ID token for https://monitor.azure.com>``, ``Content-Type:
  application/json``, optional ``Content-Encoding: gzip``; the body is a JSON array of
  objects matching the stream declaration of the DCR. Success is ``204 No Content``.
- 1 MB per call (1,048,576 bytes), compressed and uncompressed: over it,
  ``413 ContentLengthLimitExceeded`` "Maximum allowed content length: 1048576 bytes
  (1 MB). Provided content length: N bytes.".
- a principal without the *Monitoring Metrics Publisher* role on the DCR: ``403
  OperationFailed`` "The authentication token provided does not have access to ingest
  data for the data collection rule with immutable Id '...'".
- throttling (requests or data per minute per DCR): ``429`` with ``Retry-After``;
  ``503`` with ``Retry-After`` when the service is unavailable.
- errors are ``{"error": {"code": ..., "message": ...}}``.

Where the reference is silent, the emulator chooses and says so here: an absent,
expired or wrong-audience token is ``401 InvalidToken``; an unknown DCR or stream is
``404 NotFound``; a body that is not a JSON array of objects, bad gzip, or a record whose
value does not fit its declared column type (or that a test marks as refused) is
``400 InvalidPayload`` for the whole call (nothing of that call is kept). Columns not in
the declaration are dropped, as a DCR does, and counted (``dropped_columns``).

It records every accepted row (``rows``) and every call (``calls``). Faults a test can
inject: the next answers (any status, with ``Retry-After``), a request-rate limit, refused
records, a delay before answering, and "ingest, then stall before answering" (for crash
tests: the rows are kept but the client never hears so).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.entra import MONITOR_AUDIENCE, TokenBook

MAX_CALL_BYTES = 1_048_576
API_VERSIONS = frozenset({"2023-01-01", "2021-11-01-preview"})

Declarations = Mapping[str, Mapping[str, Mapping[str, str]]]  # dcr -> stream -> column -> type


@dataclass(frozen=True)
class Call:
    dcr: str
    stream: str
    status: int
    code: str | None
    rows: int
    body_bytes: int
    raw_bytes: int
    gzip: bool
    token: str | None = field(default=None, repr=False)


@dataclass
class Fault:
    status: int
    code: str
    message: str
    retry_after: str | None = None


class _Answer(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


def _fits(value: Any, kind: str) -> bool:
    if value is None or kind == "dynamic":
        return True
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind in ("int", "long"):
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "real":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "datetime":
        if not isinstance(value, str):
            return False
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return False
        return True
    return False


class IngestionEmulator:
    """The DCE's state and its Starlette app (run it with ``tests.fakes.azure``)."""

    def __init__(
        self,
        book: TokenBook,
        declarations: Declarations,
        *,
        max_call_bytes: int = MAX_CALL_BYTES,
        keep_rows: bool = True,
    ) -> None:
        self.book = book
        self.declarations = {d: {s: dict(c) for s, c in v.items()} for d, v in declarations.items()}
        self.max_call_bytes = max_call_bytes
        self.keep_rows = keep_rows
        self.roles: set[tuple[str, str]] = set()  # (principal object id, dcr immutable id)
        self.rows: list[tuple[str, dict[str, Any]]] = []  # (stream, row)
        self.row_count = 0
        self.calls: list[Call] = []
        self.dropped_columns: dict[str, int] = {}
        self.faults: list[Fault | None] = []  # None: that call passes
        self.refuse: Callable[[dict[str, Any]], bool] | None = None
        self.delay_seconds = 0.0
        self.stall_after_ingest_seconds = 0.0
        self.rate_limit: tuple[int, float, str] | None = None  # (calls, per seconds, Retry-After)
        self._window: list[float] = []
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route(
                    "/dataCollectionRules/{dcr}/streams/{stream}", self._upload, methods=["POST"]
                ),
                Route("/_emulator/stats", self._stats),
            ]
        )

    # -- set-up and inspection ----------------------------------------------------------

    def grant(self, principal_id: str, dcr: str) -> None:
        """The role assignment: *Monitoring Metrics Publisher* on the DCR."""
        self.roles.add((principal_id, dcr))

    def revoke(self, principal_id: str, dcr: str) -> None:
        self.roles.discard((principal_id, dcr))

    def fail_next(
        self,
        status: int,
        code: str = "Injected",
        *,
        times: int = 1,
        after: int = 0,
        retry_after: str | None = None,
    ) -> None:
        """The next ``times`` calls (after ``after`` that pass) answer ``status``."""
        with self._lock:
            self.faults.extend([None] * after)
            self.faults.extend(
                Fault(status, code, f"injected {status}", retry_after) for _ in range(times)
            )

    def stream_rows(self, stream: str) -> list[dict[str, Any]]:
        with self._lock:
            return [row for s, row in self.rows if s == stream]

    def event_ids(self) -> list[str]:
        with self._lock:
            return [str(row.get("EventId")) for _, row in self.rows]

    def ok_calls(self) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.status == 204]

    # -- the endpoint ------------------------------------------------------------------

    async def _stats(self, request: Request) -> Response:
        with self._lock:
            return JSONResponse({"rows": self.row_count, "calls": len(self.calls)})

    async def _upload(self, request: Request) -> Response:
        dcr, stream = request.path_params["dcr"], request.path_params["stream"]
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        raw_len = 0
        body_len = 0
        rows: list[dict[str, Any]] = []
        try:
            self._check_version(request)
            self._check_token(token, dcr)
            columns = self._declared(dcr, stream)
            self._check_faults()
            body = await self._read(request)
            body_len = len(body)
            gz = request.headers.get("content-encoding", "").lower() == "gzip"
            raw = self._inflate(body) if gz else body
            raw_len = len(raw)
            rows = self._parse(raw, columns)
        except _Answer as answer:
            self._record(
                Call(dcr, stream, answer.status, answer.code, 0, body_len, raw_len, False, token)
            )
            # The body may be unread: close, so a keep-alive connection does not sit on it.
            headers = {"Connection": "close"}
            if answer.retry_after:
                headers["Retry-After"] = answer.retry_after
            return JSONResponse(
                {"error": {"code": answer.code, "message": answer.message}},
                status_code=answer.status,
                headers=headers,
            )
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        with self._lock:
            if self.keep_rows:
                self.rows.extend((stream, row) for row in rows)
            self.row_count += len(rows)
            self.calls.append(
                Call(dcr, stream, 204, None, len(rows), body_len, raw_len, True, token)
            )
        if self.stall_after_ingest_seconds:
            await asyncio.sleep(self.stall_after_ingest_seconds)
        return Response(status_code=204)

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def _check_version(self, request: Request) -> None:
        version = request.query_params.get("api-version")
        if version not in API_VERSIONS:
            raise _Answer(
                400, "InvalidApiVersion", f"The api-version '{version}' is not supported."
            )

    def _check_token(self, token: str, dcr: str) -> None:
        issued = self.book.lookup(token) if token else None
        if issued is None or issued.expires_at < time.time() or issued.audience != MONITOR_AUDIENCE:
            raise _Answer(401, "InvalidToken", "The provided token is invalid or has expired.")
        if dcr not in self.declarations:
            raise _Answer(
                404, "NotFound", f"Data collection rule with immutable Id '{dcr}' not found."
            )
        if (issued.principal_id, dcr) not in self.roles:
            raise _Answer(
                403,
                "OperationFailed",
                "The authentication token provided does not have access to ingest data for "
                f"the data collection rule with immutable Id '{dcr}'.",
            )

    def _declared(self, dcr: str, stream: str) -> dict[str, str]:
        columns = self.declarations[dcr].get(stream)
        if columns is None:
            raise _Answer(
                404, "NotFound", f"Stream '{stream}' is not declared in the data collection rule."
            )
        return columns

    def _check_faults(self) -> None:
        with self._lock:
            fault = self.faults.pop(0) if self.faults else None
            limited = False
            if fault is None and self.rate_limit is not None:
                calls, per, _ = self.rate_limit
                now = time.monotonic()
                self._window = [t for t in self._window if now - t < per]
                limited = len(self._window) >= calls
                if not limited:
                    self._window.append(now)
        if fault is not None:
            raise _Answer(fault.status, fault.code, fault.message, fault.retry_after)
        if limited and self.rate_limit is not None:
            raise _Answer(429, "TooManyRequests", "Rate limit exceeded.", self.rate_limit[2])

    def _too_large(self, size: int) -> _Answer:
        return _Answer(
            413,
            "ContentLengthLimitExceeded",
            f"Maximum allowed content length: {self.max_call_bytes} bytes (1 MB). "
            f"Provided content length: {size} bytes.",
        )

    async def _read(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_call_bytes:
            raise self._too_large(int(declared))
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_call_bytes:  # bounded: never buffer past the limit
                raise self._too_large(len(body))
        return bytes(body)

    def _inflate(self, body: bytes) -> bytes:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            raw = inflater.decompress(body, self.max_call_bytes + 1)
        except zlib.error as exc:
            raise _Answer(400, "InvalidPayload", "The body is not valid gzip.") from exc
        if len(raw) > self.max_call_bytes:
            raise self._too_large(len(raw))
        if not inflater.eof:
            raise _Answer(400, "InvalidPayload", "The body is not valid gzip.")
        return raw

    def _parse(self, raw: bytes, columns: dict[str, str]) -> list[dict[str, Any]]:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _Answer(400, "InvalidPayload", "The body is not valid JSON.") from exc
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise _Answer(400, "InvalidPayload", "The body must be a JSON array of objects.")
        kept: list[dict[str, Any]] = []
        for i, record in enumerate(data):
            wrong = [c for c, kind in columns.items() if c in record and not _fits(record[c], kind)]
            if wrong or (self.refuse is not None and self.refuse(record)):
                raise _Answer(
                    400,
                    "InvalidPayload",
                    f"Record {i} does not match the stream declaration ({', '.join(wrong) or 'refused'}).",
                )
            extra = [c for c in record if c not in columns]
            for c in extra:
                self.dropped_columns[c] = self.dropped_columns.get(c, 0) + 1
            kept.append({c: v for c, v in record.items() if c in columns})
        return kept


def gzip_rows(rows: list[dict[str, Any]]) -> bytes:
    """A gzip JSON array, as a client would post it (for tests that post by hand)."""
    return gzip.compress(json.dumps(rows).encode())
