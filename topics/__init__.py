"""The topic catalog (SPEC §2): every topic meterstream uses, its partitions, configs and value schema.

``CATALOG`` is the single source for ``meterstream topics ensure``, the test fixtures and the Strimzi
KafkaTopic resources in ``deploy/``. Names take the optional ``METERSTREAM_TOPIC_PREFIX``.
"""

from topics.catalog import CATALOG, Topic, TopicSpec, load_schema, topic_name

__all__ = ["CATALOG", "Topic", "TopicSpec", "load_schema", "topic_name"]
