"""The Kafka sink (``type = "kafka"``): config, encoder, error mapping, sink.

kafka-python is imported only when the sink connects, so configurations can be
checked without it installed.
"""

from sinks.kafka.config import KafkaConfig
from sinks.kafka.sink import KafkaSink

__all__ = ["KafkaConfig", "KafkaSink"]
