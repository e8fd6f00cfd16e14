"""Checks of our own around kafka-python's connect: the TLS context, a bounded TLS
handshake, and a TCP-level diagnosis when bootstrapping times out.

No kafka-python here: these use ``ssl`` and ``socket`` only, so they can say what is
wrong (untrusted certificate, wrong host name, not a TLS port, refused) where the
library reports only that it could not bootstrap.
"""

from __future__ import annotations

import socket
import ssl

from sinks.base import SinkUnavailableError
from sinks.kafka.config import SASL_PROTOCOLS, TLS_PROTOCOLS, KafkaConfig

__all__ = ["diagnose", "ssl_context", "tls_check"]


def ssl_context(cfg: KafkaConfig) -> ssl.SSLContext:
    """Our own context, so a bad CA / certificate / key fails here with a clear message.

    Raises:
        SinkUnavailableError: a file does not load (the message never holds the key password).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = cfg.ssl_check_hostname
    try:
        if cfg.ssl_cafile is not None:
            ctx.load_verify_locations(cafile=str(cfg.ssl_cafile))
        else:
            ctx.load_default_certs()
    except (OSError, ssl.SSLError) as exc:
        raise SinkUnavailableError(f"ssl_cafile {cfg.ssl_cafile}: cannot load ({exc})") from None
    if cfg.ssl_certfile is not None:
        password = cfg.ssl_key_password.get_secret_value() if cfg.ssl_key_password else None
        try:
            ctx.load_cert_chain(
                certfile=str(cfg.ssl_certfile),
                keyfile=str(cfg.ssl_keyfile) if cfg.ssl_keyfile else None,
                password=password,
            )
        except (OSError, ssl.SSLError) as exc:
            raise SinkUnavailableError(
                f"ssl_certfile / ssl_keyfile: cannot load ({type(exc).__name__})"
            ) from None
    return ctx


def _split(server: str) -> tuple[str, int]:
    host, _, port = server.rpartition(":")
    return host.strip("[]"), int(port)


def tls_check(cfg: KafkaConfig, ctx: ssl.SSLContext, timeout: float) -> None:
    """One TLS handshake of our own, bounded, before kafka-python tries.

    kafka-python's handshake has no timeout (a listener that never answers TLS
    hangs it), and its failures reach us only as a bootstrap timeout; this one
    says what is wrong: untrusted certificate, wrong host name, not TLS at all.

    Raises:
        SinkUnavailableError: no bootstrap server completed a handshake.
    """
    problems = []
    for server in cfg.bootstrap_servers:
        host, port = _split(server)
        try:
            with (
                socket.create_connection((host, port), timeout=timeout) as raw,
                ctx.wrap_socket(raw, server_hostname=host),
            ):
                return
        except ssl.SSLCertVerificationError as exc:
            problems.append(f"{server}: certificate rejected ({exc.verify_message})")
        except ssl.SSLError as exc:
            problems.append(f"{server}: TLS error ({exc.reason or type(exc).__name__})")
        except TimeoutError:
            problems.append(f"{server}: no TLS answer within {timeout:g} s (not a TLS port?)")
        except OSError as exc:
            problems.append(f"{server}: {exc.strerror or type(exc).__name__}")
    raise SinkUnavailableError(f"TLS handshake failed: {'; '.join(problems)}")


def diagnose(cfg: KafkaConfig, timeout: float) -> str:
    """Why bootstrapping failed, as far as a plain TCP connect can tell."""
    refused = []
    for server in cfg.bootstrap_servers:
        try:
            with socket.create_connection(_split(server), timeout=min(timeout, 2)):
                pass
        except OSError as exc:
            refused.append(f"{server}: {exc.strerror or type(exc).__name__}")
            continue
        checks = [f"security_protocol ({cfg.security_protocol})"]
        if cfg.security_protocol in SASL_PROTOCOLS:
            checks.append(f"sasl_mechanism ({cfg.sasl_mechanism}), sasl_username/password")
        if cfg.security_protocol in TLS_PROTOCOLS:
            checks.append("ssl_cafile, client certificate and hostname")
        return (
            f"{server} accepts TCP connections but the Kafka handshake did not complete"
            f" within {timeout:g} s; check {', '.join(checks)}"
        )
    return f"no bootstrap server accepts connections ({'; '.join(refused)})"
