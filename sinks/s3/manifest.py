"""The tamper-evident chain: manifest entries, hash links, signed manifests. Pure.

Every archived object gets an *entry* (key, SHA-256 of the stored bytes, event count,
seq range, first / last event time). Entries form one hash chain: each holds ``prev``,
the hash of the entry before it (``GENESIS`` for the first), and an entry's hash is
the SHA-256 of its canonical JSON. Entries are published in *manifests*; manifest
``n`` holds the entries written since manifest ``n - 1``, names the previous
manifest's hash, and is signed with Ed25519. Manifest keys count *down*
(``999999999999 - n``) so the newest is the first one S3 lists.

Canonical JSON: UTF-8, keys sorted, no whitespace, non-ASCII escaped. Every number
in a manifest is an integer, so the encoding is unambiguous.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "FORMAT",
    "GENESIS",
    "MANIFEST_DIR",
    "ChainHead",
    "EntryInfo",
    "ManifestError",
    "SignedManifest",
    "build_manifest",
    "canonical",
    "entry_hash",
    "key_id",
    "link_entries",
    "load_private_key",
    "load_public_key",
    "manifest_key",
    "open_manifest",
    "sequence_of_key",
    "sign_manifest",
]

FORMAT = "bighub-siem-archive-manifest"
VERSION = 1
GENESIS = "0" * 64
MANIFEST_DIR = "_manifests/"
_MAX_SEQUENCE = 999_999_999_999
_MANIFEST_NAME = re.compile(r"([0-9]{12})\.json")


class ManifestError(ValueError):
    """A manifest is unreadable, malformed, or its signature does not verify."""


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """What the chain records about one archived object (before linking)."""

    key: str
    sha256: str
    size: int
    events: int
    first_seq: int
    last_seq: int
    first_event_time: str
    last_event_time: str


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where the chain stands after the latest manifest.

    Attributes:
        sequence: the latest manifest's number, -1 before the first.
        manifest_sha256: hash of the latest manifest's canonical body, if any.
        head: hash of the last entry (``GENESIS`` before the first).
        next_index: index the next entry gets.
    """

    sequence: int = -1
    manifest_sha256: str | None = None
    head: str = GENESIS
    next_index: int = 0


@dataclass(frozen=True, slots=True)
class SignedManifest:
    """A manifest whose signature verified; ``sha256`` is its canonical body's hash."""

    body: dict[str, Any]
    sha256: str

    @property
    def sequence(self) -> int:
        return int(self.body["sequence"])

    @property
    def entries(self) -> list[dict[str, Any]]:
        return list(self.body["entries"])

    def head(self) -> ChainHead:
        chain = self.body["chain"]
        return ChainHead(self.sequence, self.sha256, chain["head"], int(chain["end_index"]))


def canonical(value: Any) -> bytes:
    """The one byte encoding that is hashed and signed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def entry_hash(entry: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(dict(entry))).hexdigest()


def link_entries(
    infos: Sequence[EntryInfo], *, prev: str, start_index: int
) -> list[dict[str, Any]]:
    """Chain ``infos`` after the entry whose hash is ``prev``."""
    linked: list[dict[str, Any]] = []
    for offset, info in enumerate(infos):
        entry = {
            "index": start_index + offset,
            "key": info.key,
            "sha256": info.sha256,
            "size": info.size,
            "events": info.events,
            "first_seq": info.first_seq,
            "last_seq": info.last_seq,
            "first_event_time": info.first_event_time,
            "last_event_time": info.last_event_time,
            "prev": prev,
        }
        prev = entry_hash(entry)
        linked.append(entry)
    return linked


def manifest_key(key_prefix: str, sequence: int) -> str:
    """``<prefix>/_manifests/<999999999999 - n>.json``: the newest lists first."""
    if not 0 <= sequence <= _MAX_SEQUENCE:
        raise ValueError("manifest sequence out of range")
    return f"{key_prefix}{MANIFEST_DIR}{_MAX_SEQUENCE - sequence:012d}.json"


def sequence_of_key(key: str) -> int | None:
    """The manifest number a key names, or None when it is not a manifest name."""
    match = _MANIFEST_NAME.fullmatch(key.rsplit("/", 1)[-1])
    return _MAX_SEQUENCE - int(match.group(1)) if match else None


def build_manifest(
    *,
    prefix: str,
    previous: ChainHead,
    infos: Sequence[EntryInfo],
    created_at: str,
    signer_key_id: str,
) -> dict[str, Any]:
    """Manifest ``previous.sequence + 1`` holding ``infos``, linked onto ``previous``."""
    entries = link_entries(infos, prev=previous.head, start_index=previous.next_index)
    head = entry_hash(entries[-1]) if entries else previous.head
    sequence = previous.sequence + 1
    return {
        "format": FORMAT,
        "version": VERSION,
        "prefix": prefix,
        "sequence": sequence,
        "created_at": created_at,
        "key_id": signer_key_id,
        "previous_manifest": (
            None
            if previous.manifest_sha256 is None
            else {"sequence": previous.sequence, "sha256": previous.manifest_sha256}
        ),
        "chain": {
            "start": previous.head,
            "start_index": previous.next_index,
            "head": head,
            "end_index": previous.next_index + len(entries),
        },
        "entries": entries,
    }


def sign_manifest(body: Mapping[str, Any], key: Ed25519PrivateKey) -> tuple[bytes, str]:
    """The manifest object's bytes and the body's hash (what the next manifest names)."""
    payload = canonical(dict(body))
    signature = base64.b64encode(key.sign(payload)).decode("ascii")
    data = json.dumps({"manifest": body, "signature": signature}, sort_keys=True, indent=1)
    return data.encode("utf-8") + b"\n", hashlib.sha256(payload).hexdigest()


def open_manifest(data: bytes, public_key: Ed25519PublicKey) -> SignedManifest:
    """Parse a manifest object and check its signature and shape.

    Raises:
        ManifestError: not JSON, not a manifest, or the signature does not verify.
    """
    try:
        outer = json.loads(data)
        body = outer["manifest"]
        signature = base64.b64decode(outer["signature"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ManifestError("not a signed manifest object") from None
    if not isinstance(body, dict):
        raise ManifestError("not a signed manifest object")
    payload = canonical(body)
    try:
        public_key.verify(signature, payload)
    except InvalidSignature:
        theirs = body.get("key_id")
        hint = f" (signed by key {theirs})" if theirs != key_id(public_key) else ""
        raise ManifestError(f"signature does not verify with the given public key{hint}") from None
    _check_shape(body)
    return SignedManifest(body, hashlib.sha256(payload).hexdigest())


def _check_shape(body: Mapping[str, Any]) -> None:
    try:
        ok = (
            body["format"] == FORMAT
            and body["version"] == VERSION
            and isinstance(body["sequence"], int)
            and isinstance(body["entries"], list)
            and all(isinstance(body["chain"][k], int) for k in ("start_index", "end_index"))
            and all(isinstance(body["chain"][k], str) for k in ("start", "head"))
            and all(isinstance(e, dict) and isinstance(e.get("key"), str) for e in body["entries"])
        )
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise ManifestError(f"signed, but not a {FORMAT} version {VERSION}")


# -- keys ------------------------------------------------------------------------------


def _raw_32(text: str) -> bytes | None:
    text = text.strip()
    for decode in (bytes.fromhex, lambda t: base64.b64decode(t, validate=True)):
        try:
            raw = decode(text)
        except (ValueError, binascii.Error):
            continue
        if len(raw) == 32:
            return raw
    return None


def load_private_key(text: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from PKCS#8 PEM, or 32 raw bytes as hex or base64.

    Raises:
        ValueError: anything else (the message never contains the key).
    """
    if "-----BEGIN" in text:
        try:
            key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
        except (ValueError, TypeError, UnicodeEncodeError):
            raise ValueError("signing_key: not a readable unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("signing_key: the PEM key is not an Ed25519 key")
        return key
    raw = _raw_32(text)
    if raw is None:
        raise ValueError("signing_key: expected an Ed25519 PEM key or 32 bytes as hex / base64")
    return Ed25519PrivateKey.from_private_bytes(raw)


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo), or 32 bytes raw / hex / base64.

    Raises:
        ValueError: anything else.
    """
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError):
            raise ValueError("not a readable PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the PEM public key is not an Ed25519 key")
        return key
    if len(data) == 32:
        return Ed25519PublicKey.from_public_bytes(data)
    try:
        raw = _raw_32(data.decode("ascii"))
    except UnicodeDecodeError:
        raw = None
    if raw is None:
        raise ValueError("expected an Ed25519 public key: PEM, or 32 bytes raw / hex / base64")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key, recorded in each manifest."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]
