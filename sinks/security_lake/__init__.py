"""Amazon Security Lake: OCSF records as Parquet objects under custom sources."""

from sinks.security_lake.config import SecurityLakeConfig, SourceNames
from sinks.security_lake.sink import SecurityLakeSink

__all__ = ["SecurityLakeConfig", "SecurityLakeSink", "SourceNames"]
