"""The one Kafka layer: the only package that builds confluent-kafka clients.

- :class:`~processor.kafka.produce.AckedProducer`: every record written to Kafka goes through it
  (per-message delivery callbacks, a full queue waited out for a bounded time, bounded flushes, one error
  mapping onto :class:`~processor.errors.KafkaDeliveryError`); ``produce_many`` is its bulk path, at the
  bare client's per-record cost.
- :func:`~processor.kafka.consume.new_consumer`: every ``Consumer``, with the shared group defaults.
- :mod:`~processor.kafka.admin`: ``new_admin``, topic ensuring and drift reports, and ``broker_answers``,
  the readiness probe of the embedded and durable brokers (a bare loopback address, no settings yet).
- :mod:`~processor.kafka.clients` and :mod:`~processor.kafka.faust_config`: librdkafka and faust
  settings, where the embedded broker's quirks (SPEC §11) are handled once.

Topic names come from :mod:`topics.catalog` (``Topic``, ``topic_name``), never from string literals.
``tests/unit/test_layering.py`` fails when a module outside this package imports ``Producer``,
``Consumer`` or ``AdminClient`` from confluent-kafka for use at run time (``if TYPE_CHECKING:`` imports,
for annotations, are fine), or writes a topic's base name as a string; tests/ and bench/ are held to the
same client rule (deliberate raw clients listed by file, with the reason) and their shared helpers to the
topic rule.
"""

from processor.kafka.admin import TopicReport, broker_answers, ensure_topics, new_admin
from processor.kafka.clients import consumer_config, producer_config
from processor.kafka.consume import new_consumer
from processor.kafka.produce import AckedProducer, RecordTooLargeError

__all__ = [
    "AckedProducer",
    "RecordTooLargeError",
    "TopicReport",
    "broker_answers",
    "consumer_config",
    "ensure_topics",
    "new_admin",
    "new_consumer",
    "producer_config",
]
