"""The S3 compliance archive sink (``type = "s3"``) and its verifier."""

from sinks.s3.config import S3Config
from sinks.s3.sink import S3Sink
from sinks.s3.verify import Finding, VerifyReport, verify_archive

__all__ = ["Finding", "S3Config", "S3Sink", "VerifyReport", "verify_archive"]
