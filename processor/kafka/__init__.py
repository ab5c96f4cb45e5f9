"""Thin typed wrappers over confluent-kafka: client configs with our defaults, and topic administration."""

from processor.kafka.admin import TopicReport, ensure_topics
from processor.kafka.clients import consumer_config, producer_config

__all__ = ["TopicReport", "consumer_config", "ensure_topics", "producer_config"]
