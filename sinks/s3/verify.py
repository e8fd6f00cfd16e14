"""The archive verifier behind ``bighub-siem verify-archive``.

Trusts nothing in the bucket but the public key it is given. It reads every manifest,
checks its signature, its place in the sequence and its links, then reads every
object the chain names and compares its SHA-256, and finally lists the archive for
objects no manifest names. Each problem becomes a ``Finding``:

==================  ===============================================================
kind                meaning
==================  ===============================================================
forged_manifest     unreadable, not a manifest, or the signature does not verify
misplaced_manifest  a genuine manifest stored under another sequence or prefix
                    (manifests reordered or copied)
missing_manifest    a sequence number with no manifest (deleted)
broken_chain        a manifest does not link to its predecessor, or its entries do
                    not link to each other
conflicting_entry   two entries name one key with different hashes
missing_object      an object the chain names is gone
altered_object      an object's bytes differ from its chain entry
unchained_object    an object under the prefix that no manifest names (inserted, or
                    its manifest was deleted)
==================  ===============================================================

A verifier cannot see manifests deleted from the *end* of the chain unless their
objects remain (then they are ``unchained_object``); auditors should keep the
``head`` and ``manifests`` figures of each run and compare the next run with them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sinks.s3._client import S3Api, S3Settings
from sinks.s3.health import MARKER_NAME
from sinks.s3.manifest import (
    GENESIS,
    MANIFEST_DIR,
    ManifestError,
    SignedManifest,
    entry_hash,
    load_public_key,
    open_manifest,
    sequence_of_key,
)

__all__ = ["Finding", "VerifyReport", "run_verify", "verify_archive"]

_READERS = 8  # parallel object reads


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem found in the archive."""

    kind: str
    key: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.key}: {self.detail}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of one verification run."""

    findings: tuple[Finding, ...]
    manifests: int
    objects: int
    events: int
    head: str

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        state = "archive ok" if self.ok else f"{len(self.findings)} finding(s)"
        return (
            f"{state}: {self.manifests} manifest(s), {self.objects} object(s), "
            f"{self.events} event(s), chain head {self.head}"
        )


def _read_manifests(
    api: S3Api, key_prefix: str, prefix: str, public_key: Ed25519PublicKey
) -> tuple[dict[int, tuple[str, SignedManifest]], set[int], list[Finding]]:
    found: list[Finding] = []
    good: dict[int, tuple[str, SignedManifest]] = {}
    named: set[int] = set()
    for key in api.keys(key_prefix + MANIFEST_DIR):
        sequence = sequence_of_key(key)
        if sequence is None:
            found.append(Finding("forged_manifest", key, "not a manifest name"))
            continue
        data = api.get(key)
        if data is None:
            continue  # deleted while we listed: not named, so the gap is reported below
        named.add(sequence)
        try:
            manifest = open_manifest(data, public_key)
        except ManifestError as exc:
            found.append(Finding("forged_manifest", key, str(exc)))
            continue
        if manifest.sequence != sequence or manifest.body.get("prefix") != prefix:
            found.append(
                Finding(
                    "misplaced_manifest",
                    key,
                    f"holds manifest {manifest.sequence} of prefix "
                    f"{manifest.body.get('prefix')!r}, expected {sequence} of {prefix!r}",
                )
            )
            continue
        good[sequence] = (key, manifest)
    # Gaps below the newest genuine manifest; a planted name far ahead (already reported
    # above) must not make us enumerate a trillion sequence numbers.
    for missing in sorted(set(range(max(good, default=-1) + 1)) - named):
        found.append(Finding("missing_manifest", f"sequence {missing}", "no manifest"))
    return good, named, found


def _check_links(manifests: dict[int, tuple[str, SignedManifest]]) -> list[Finding]:
    found: list[Finding] = []
    for sequence in sorted(manifests):
        key, manifest = manifests[sequence]
        chain = manifest.body["chain"]
        previous = manifests.get(sequence - 1)
        if sequence == 0:
            linked = (
                manifest.body.get("previous_manifest") is None
                and chain["start"] == GENESIS
                and chain["start_index"] == 0
            )
        elif previous is not None:
            before = previous[1]
            linked = (
                manifest.body.get("previous_manifest")
                == {"sequence": sequence - 1, "sha256": before.sha256}
                and chain["start"] == before.body["chain"]["head"]
                and chain["start_index"] == before.body["chain"]["end_index"]
            )
        else:
            linked = True  # its predecessor is missing, already reported
        if not linked:
            found.append(Finding("broken_chain", key, "does not link to the manifest before it"))
        prev, index = chain["start"], chain["start_index"]
        for entry in manifest.entries:
            if entry.get("prev") != prev or entry.get("index") != index:
                found.append(Finding("broken_chain", key, f"entry {index} is out of order"))
                break
            prev, index = entry_hash(entry), index + 1
        else:
            if chain["head"] != prev or chain["end_index"] != index:
                found.append(Finding("broken_chain", key, "head does not match its entries"))
    return found


def _check_objects(
    api: S3Api, entries: Iterable[dict[str, object]]
) -> tuple[dict[str, str], int, list[Finding]]:
    found: list[Finding] = []
    expected: dict[str, str] = {}
    events = 0
    for entry in entries:
        key, sha = str(entry["key"]), str(entry["sha256"])
        if key in expected:
            # The same object recorded twice (recovery after a crash) is harmless.
            if expected[key] != sha:
                found.append(Finding("conflicting_entry", key, "named twice with other hashes"))
            continue
        expected[key] = sha
        count = entry.get("events")
        events += count if isinstance(count, int) else 0

    def digest(key: str) -> str | None:
        data = api.get(key)
        return None if data is None else hashlib.sha256(data).hexdigest()

    with ThreadPoolExecutor(_READERS) as pool:
        for key, actual in zip(expected, pool.map(digest, expected), strict=True):
            if actual is None:
                found.append(
                    Finding("missing_object", key, "named by the chain, not in the bucket")
                )
            elif actual != expected[key]:
                found.append(
                    Finding("altered_object", key, f"sha256 {actual}, chain says {expected[key]}")
                )
    return expected, events, found


def verify_archive(api: S3Api, *, prefix: str, public_key: Ed25519PublicKey) -> VerifyReport:
    """Walk the archive under ``prefix`` and report every problem found.

    Raises:
        SinkError: S3 could not be read (unreachable, access denied...).
    """
    prefix = prefix.strip("/")
    key_prefix = f"{prefix}/" if prefix else ""
    manifests, _, findings = _read_manifests(api, key_prefix, prefix, public_key)
    findings += _check_links(manifests)
    entries = [e for seq in sorted(manifests) for e in manifests[seq][1].entries]
    expected, events, object_findings = _check_objects(api, entries)
    findings += object_findings
    skip = (key_prefix + MANIFEST_DIR, key_prefix + MARKER_NAME)
    for key in api.keys(key_prefix):
        if not key.startswith(skip) and key not in expected and not key.endswith("/"):
            findings.append(Finding("unchained_object", key, "no manifest names this object"))
    head = manifests[max(manifests)][1].body["chain"]["head"] if manifests else GENESIS
    return VerifyReport(tuple(findings), len(manifests), len(expected), events, str(head))


def run_verify(
    *,
    bucket: str,
    prefix: str,
    public_key_file: Path,
    endpoint_url: str | None = None,
    region: str | None = None,
) -> VerifyReport:
    """``verify-archive``: credentials from the boto3 chain (environment, profile, role).

    Raises:
        ValueError: the public key file is not an Ed25519 public key.
        OSError: the public key file cannot be read.
        SinkError: S3 could not be read.
    """
    public_key = load_public_key(public_key_file.read_bytes())
    api = S3Api(S3Settings(bucket=bucket, region=region, endpoint_url=endpoint_url, max_pool=8))
    return verify_archive(api, prefix=prefix, public_key=public_key)
