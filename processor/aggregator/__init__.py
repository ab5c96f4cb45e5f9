"""The stream processor: SPEC §3 semantics (validate.py, values.py, meterbook.py), one batch through Redis
(engine.py) and the Kafka consumer-group member around it (runner.py)."""
