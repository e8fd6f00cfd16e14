"""``verify-archive``: check an S3 archive's signed manifest chain and objects."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from receiver.cli._errors import missing_extras
from sinks._extras import MissingExtraError, require

__all__ = ["register"]


def cmd_verify_archive(args: argparse.Namespace) -> int:
    from sinks import SinkError
    from sinks.s3.verify import run_verify

    try:
        require("boto3", extra="s3", package="boto3", what="reading the archive")
    except MissingExtraError as exc:
        raise missing_extras([("verify-archive", exc)]) from None
    try:
        report = run_verify(
            bucket=args.bucket,
            prefix=args.prefix,
            public_key_file=Path(args.public_key),
            endpoint_url=args.endpoint_url,
            region=args.region,
        )
    except (OSError, ValueError) as exc:
        print(f"bighub-siem: --public-key: {exc}", file=sys.stderr)
        return 2
    except SinkError as exc:  # could not read the archive: not a clean result
        print(f"bighub-siem: verify-archive: {exc}", file=sys.stderr)
        return 1
    for finding in report.findings:
        print(finding)
    print(report.summary())
    return 0 if report.ok else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    va = sub.add_parser(
        "verify-archive", help="check an S3 archive's signed manifest chain and objects"
    )
    va.add_argument("--bucket", required=True)
    va.add_argument("--prefix", default="bighub-siem", help="the sink's prefix")
    va.add_argument("--public-key", required=True, help="Ed25519 public key file (PEM or raw)")
    va.add_argument("--endpoint-url", help="S3-compatible endpoint (default: AWS)")
    va.add_argument("--region")
    va.set_defaults(func=cmd_verify_archive)
