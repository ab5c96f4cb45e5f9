"""Thin typed wrappers over confluent-kafka: client configs with our defaults, and topic administration."""

from processor.kafka.admin import TopicReport, ensure_topics
from processor.kafka.clients import consumer_config, producer_config
from processor.kafka.consume import new_consumer

__all__ = ["TopicReport", "consumer_config", "ensure_topics", "new_consumer", "producer_config"]
