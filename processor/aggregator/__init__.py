"""The stream processor: SPEC §3 semantics (validate.py, values.py; meters over time come from
processor/meters/book.py), one batch through Redis (engine.py) and the Kafka consumer-group member around it
(runner.py)."""
