"""A Microsoft Entra ID token service emulator (Starlette), from Microsoft's published protocol.

What it serves, as the Microsoft identity platform documents it:

- ``GET /{tenant}/v2.0/.well-known/openid-configuration``: the OpenID Connect metadata
  whose ``token_endpoint`` a client (MSAL, inside ``azure-identity``) then uses;
- ``POST /{tenant}/oauth2/v2.0/token``, form encoded, OAuth 2.0 client credentials grant
  (``grant_type=client_credentials``, ``client_id``, ``scope=<resource>/.default``) with
  either ``client_secret``, or ``client_assertion_type=urn:ietf:params:oauth:client-
  assertion-type:jwt-bearer`` and ``client_assertion``: a JWT signed with the app's
  certificate (``x5t`` / ``x5t#S256`` header, ``aud`` = the token endpoint, ``iss`` =
  ``sub`` = the client id), or a federated token (workload identity: a JWT from a
  registered issuer, ``aud`` = ``api://AzureADTokenExchange``, matching subject). The
  answer is ``{"token_type": "Bearer", "expires_in": N, "ext_expires_in": N,
  "access_token": ...}``; refusals carry ``error`` / ``error_description`` (with the
  AADSTS code) / ``error_codes`` as documented;
- ``GET /msi/token``: the App Service managed identity endpoint (``IDENTITY_ENDPOINT``,
  ``api-version=2019-08-01``, ``resource``, optional ``client_id``, header
  ``X-IDENTITY-HEADER``), answering ``access_token`` / ``expires_on`` (epoch seconds).

Access tokens are opaque random strings recorded in a ``TokenBook`` that the Logs
Ingestion emulator reads: which principal, which audience, until when. Tests can shorten
their lifetime (to exercise refresh), revoke them, or make the next token requests fail.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

MONITOR_AUDIENCE = "https://monitor.azure.com"
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_jwt(key: rsa.RSAPrivateKey, claims: dict[str, Any], header: dict[str, Any]) -> str:
    """An RS256 JWT (what a Kubernetes service account token looks like)."""
    head = b64url(json.dumps({"alg": "RS256", "typ": "JWT", **header}).encode())
    body = b64url(json.dumps(claims).encode())
    signature = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{body}.{b64url(signature)}"


def _verify_jwt(token: str, key: rsa.RSAPublicKey) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of an RS256 / PS256 JWT signed by ``key``; ValueError otherwise."""
    try:
        head_b64, body_b64, sig_b64 = token.split(".")
        header = json.loads(_unb64url(head_b64))
        claims = json.loads(_unb64url(body_b64))
        signature = _unb64url(sig_b64)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("malformed JWT") from exc
    signed = f"{head_b64}.{body_b64}".encode()
    pad: padding.AsymmetricPadding
    if header.get("alg") == "RS256":
        pad = padding.PKCS1v15()
    elif header.get("alg") == "PS256":
        pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    else:
        raise ValueError(f"unsupported alg {header.get('alg')!r}")
    try:
        key.verify(signature, signed, pad, hashes.SHA256())
    except InvalidSignature as exc:
        raise ValueError("bad signature") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("malformed JWT")
    return header, claims


def _audience(resource_or_scope: str) -> str:
    """``https://monitor.azure.com//.default`` / ``https://monitor.azure.com/`` -> the resource."""
    value = resource_or_scope.removesuffix("/.default")
    return value.rstrip("/")


@dataclass(frozen=True)
class Issued:
    token: str
    tenant_id: str
    principal_id: str  # the object id of the app's service principal / managed identity
    audience: str
    expires_at: float


class TokenBook:
    """Access tokens issued by the emulator, shared with the resource emulators."""

    def __init__(self, lifetime_seconds: int = 3599) -> None:
        self.lifetime_seconds = lifetime_seconds
        self._tokens: dict[str, Issued] = {}
        self._lock = threading.Lock()
        self.issued_count = 0

    def issue(self, tenant_id: str, principal_id: str, audience: str) -> Issued:
        issued = Issued(
            "eyJ0eXAi." + secrets.token_urlsafe(32),  # opaque; shaped like a JWT's start
            tenant_id,
            principal_id,
            audience,
            time.time() + self.lifetime_seconds,
        )
        with self._lock:
            self._tokens[issued.token] = issued
            self.issued_count += 1
        return issued

    def lookup(self, token: str) -> Issued | None:
        with self._lock:
            return self._tokens.get(token)

    def revoke_all(self) -> None:
        """Every token issued so far is refused from now on (say, a key rollover)."""
        with self._lock:
            self._tokens.clear()

    def all_tokens(self) -> list[str]:
        with self._lock:
            return list(self._tokens)


@dataclass
class AppRegistration:
    """An app registration with its service principal in one tenant."""

    tenant_id: str
    client_id: str
    object_id: str
    secrets: set[str] = field(default_factory=set)
    certificate: x509.Certificate | None = None
    # workload identity: (issuer, subject) -> the issuer's signing key
    federated: dict[tuple[str, str], rsa.RSAPublicKey] = field(default_factory=dict)


def _thumbprints(cert: x509.Certificate) -> tuple[str, str]:
    der = cert.public_bytes(serialization.Encoding.DER)
    return b64url(hashlib.sha1(der).digest()), b64url(hashlib.sha256(der).digest())  # noqa: S324


class EntraEmulator:
    """The token service's state and its Starlette app (run it with ``tests.fakes.azure``)."""

    def __init__(self, book: TokenBook) -> None:
        self.book = book
        self.base_url = ""  # set once the server listens; the metadata names it
        self.apps: dict[str, AppRegistration] = {}
        self.managed: dict[str, str] = {}  # managed identity client id ("" = system) -> object id
        self.identity_header = secrets.token_hex(16)
        self.requests: list[tuple[str, str, int]] = []  # (path, grant or kind, status)
        self.fail_next: list[tuple[int, dict[str, Any]]] = []
        self.on_token: Callable[[str], None] | None = None  # called with the client id
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/{tenant}/v2.0/.well-known/openid-configuration", self._metadata),
                Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
                Route("/msi/token", self._msi),
            ]
        )

    # -- registration -------------------------------------------------------------------

    def register(self, tenant_id: str, client_id: str, **extra: Any) -> AppRegistration:
        app = AppRegistration(tenant_id, client_id, object_id=f"sp-{client_id}", **extra)
        self.apps[client_id] = app
        return app

    def register_managed_identity(self, client_id: str = "") -> str:
        object_id = f"mi-{client_id or 'system'}"
        self.managed[client_id] = object_id
        return object_id

    def tokens_issued(self) -> int:
        return self.book.issued_count

    # -- endpoints ----------------------------------------------------------------------

    async def _metadata(self, request: Request) -> Response:
        tenant = request.path_params["tenant"]
        base = f"{self.base_url}/{tenant}"
        return JSONResponse(
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "issuer": f"{self.base_url}/{tenant}/v2.0",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "response_types_supported": ["code", "id_token", "code id_token"],
            }
        )

    def _refuse(self, status: int, error: str, code: int, text: str) -> JSONResponse:
        return JSONResponse(
            {
                "error": error,
                "error_description": f"AADSTS{code}: {text} Trace ID: {secrets.token_hex(8)}",
                "error_codes": [code],
                "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
            },
            status_code=status,
        )

    def _log(self, path: str, kind: str, status: int) -> None:
        with self._lock:
            self.requests.append((path, kind, status))

    def _injected(self) -> tuple[int, dict[str, Any]] | None:
        with self._lock:
            return self.fail_next.pop(0) if self.fail_next else None

    async def _token(self, request: Request) -> Response:
        tenant = request.path_params["tenant"]
        raw = await request.body()
        if len(raw) > 64 * 1024:
            return self._refuse(400, "invalid_request", 90014, "The request body is too large.")
        values = dict(urllib.parse.parse_qsl(raw.decode("utf-8", "replace")))
        grant = values.get("grant_type", "")
        injected = self._injected()
        if injected is not None:
            self._log("token", grant, injected[0])
            return JSONResponse(injected[1], status_code=injected[0])
        answer = self._client_credentials(tenant, values, str(request.url))
        self._log("token", grant, answer.status_code)
        return answer

    def _client_credentials(self, tenant: str, form: dict[str, str], url: str) -> JSONResponse:
        if form.get("grant_type") != "client_credentials":
            return self._refuse(
                400, "unsupported_grant_type", 70003, "The grant type is not supported."
            )
        app = self.apps.get(form.get("client_id", ""))
        if app is None or app.tenant_id != tenant:
            return self._refuse(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{form.get('client_id')}' was not found in the "
                f"directory '{tenant}'.",
            )
        scope = form.get("scope", "")
        if not scope.endswith("/.default"):
            return self._refuse(
                400, "invalid_scope", 1002012, "The provided value for scope is not valid."
            )
        if "client_secret" in form:
            if form["client_secret"] not in app.secrets:
                return self._refuse(
                    401, "invalid_client", 7000215, "Invalid client secret provided."
                )
        elif form.get("client_assertion_type") == JWT_BEARER:
            refusal = self._check_assertion(app, form.get("client_assertion", ""), url)
            if refusal is not None:
                return refusal
        else:
            return self._refuse(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' "
                "or 'client_secret'.",
            )
        issued = self.book.issue(tenant, app.object_id, _audience(scope))
        if self.on_token is not None:
            self.on_token(app.client_id)
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": self.book.lifetime_seconds,
                "ext_expires_in": self.book.lifetime_seconds,
                "access_token": issued.token,
            }
        )

    def _check_assertion(
        self, app: AppRegistration, assertion: str, url: str
    ) -> JSONResponse | None:
        try:
            header = json.loads(_unb64url(assertion.split(".")[0]))
        except (ValueError, IndexError, UnicodeDecodeError):
            return self._refuse(400, "invalid_request", 50027, "JWT token is invalid or malformed.")
        if not isinstance(header, dict):
            return self._refuse(400, "invalid_request", 50027, "JWT token is invalid or malformed.")
        if "x5t" in header or "x5t#S256" in header:
            return self._check_certificate(app, assertion, header, url)
        return self._check_federated(app, assertion)

    def _check_certificate(
        self, app: AppRegistration, assertion: str, header: dict[str, Any], url: str
    ) -> JSONResponse | None:
        cert = app.certificate
        sha1, sha256 = _thumbprints(cert) if cert is not None else ("", "")
        presented = str(header.get("x5t#S256", header.get("x5t", ""))).rstrip("=")
        if cert is None or presented not in (sha1, sha256):
            return self._refuse(
                401,
                "invalid_client",
                700027,
                "The certificate with identifier used to sign the client assertion is not "
                "registered on application.",
            )
        public = cert.public_key()
        if not isinstance(public, rsa.RSAPublicKey):
            return self._refuse(401, "invalid_client", 700027, "Unsupported key type.")
        try:
            _, claims = _verify_jwt(assertion, public)
        except ValueError:
            return self._refuse(
                401, "invalid_client", 700027, "Client assertion contains an invalid signature."
            )
        now = time.time()
        if claims.get("aud") != url.split("?")[0]:
            return self._refuse(
                401, "invalid_client", 700021, "Client assertion audience claim does not match."
            )
        if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
            return self._refuse(
                401, "invalid_client", 700023, "Client assertion issuer or subject is wrong."
            )
        if not (claims.get("nbf", 0) - 300 <= now <= claims.get("exp", 0)):
            return self._refuse(
                401,
                "invalid_client",
                700024,
                "Client assertion is not within its valid time range.",
            )
        return None

    def _check_federated(self, app: AppRegistration, assertion: str) -> JSONResponse | None:
        try:
            claims = json.loads(_unb64url(assertion.split(".")[1]))
        except (ValueError, IndexError, UnicodeDecodeError):
            return self._refuse(400, "invalid_request", 50027, "JWT token is invalid or malformed.")
        key = app.federated.get((str(claims.get("iss")), str(claims.get("sub"))))
        if key is None:
            return self._refuse(
                400,
                "invalid_request",
                70021,
                "No matching federated identity record found for presented assertion.",
            )
        try:
            _, claims = _verify_jwt(assertion, key)
        except ValueError:
            return self._refuse(400, "invalid_request", 50027, "JWT token is invalid or malformed.")
        if claims.get("aud") != TOKEN_EXCHANGE_AUDIENCE:
            return self._refuse(
                400,
                "invalid_request",
                700212,
                "No matching federated identity record for audience.",
            )
        if claims.get("exp", 0) < time.time():
            return self._refuse(400, "invalid_client", 700024, "Client assertion is expired.")
        return None

    async def _msi(self, request: Request) -> Response:
        injected = self._injected()
        if injected is not None:
            self._log("msi", "managed_identity", injected[0])
            return JSONResponse(injected[1], status_code=injected[0])
        params = request.query_params
        if request.headers.get("x-identity-header") != self.identity_header:
            self._log("msi", "managed_identity", 401)
            return JSONResponse({"statusCode": 401, "message": "Unauthorized"}, status_code=401)
        if params.get("api-version") != "2019-08-01" or not params.get("resource"):
            self._log("msi", "managed_identity", 400)
            return JSONResponse({"statusCode": 400, "message": "Bad request"}, status_code=400)
        client_id = params.get("client_id", "")
        object_id = self.managed.get(client_id)
        if object_id is None:
            self._log("msi", "managed_identity", 400)
            return JSONResponse(
                {"statusCode": 400, "message": "No managed identity with that client id"},
                status_code=400,
            )
        resource = params["resource"]
        issued = self.book.issue("managed", object_id, _audience(resource))
        self._log("msi", "managed_identity", 200)
        return JSONResponse(
            {
                "access_token": issued.token,
                "expires_on": str(int(issued.expires_at)),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": client_id or "system-assigned",
            }
        )


def rsa_certificate(
    common_name: str = "bighub-siem test app",
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A self-signed RSA certificate, as one uploads to an app registration."""
    import datetime

    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def pem_bundle(key: rsa.RSAPrivateKey, cert: x509.Certificate) -> str:
    """Private key and certificate in one PEM text (what ``CertificateCredential`` reads)."""
    return (
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        + cert.public_bytes(serialization.Encoding.PEM).decode()
    )
