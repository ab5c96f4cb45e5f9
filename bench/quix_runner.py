"""Quix Streams reference for ``python -m bench processor``: a 1 h tumbling sum per key of the bench's events.

Runs in its own virtualenv (bench/processor_bench.py creates it: Quix Streams pins its own confluent-kafka),
so it imports nothing from meterstream. No dedup, no cancellations, no exactly-once: what a plain stream
job costs per record. Usage: ``python quix_runner.py <bootstrap> <topic> <records> <state dir>``; prints one
JSON object ``{"records": n, "elapsed": seconds}`` (from the first record to the n-th).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from typing import Any

from quixstreams import Application  # type: ignore[import-not-found]


def main() -> None:
    bootstrap, topic_name, n, state_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    app = Application(
        broker_address=bootstrap,
        consumer_group=f"quix-bench-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        use_changelog_topics=False,
        auto_create_topics=False,
        state_dir=state_dir,
    )
    topic = app.topic(topic_name, value_deserializer="json")
    seen = {"n": 0, "t0": 0.0, "t1": 0.0}

    def count(value: Any) -> None:
        if seen["n"] == 0:
            seen["t0"] = time.perf_counter()
        seen["n"] += 1
        if seen["n"] >= n:
            seen["t1"] = time.perf_counter()
            app.stop()

    def value_of(value: Any) -> int:
        payload = value.get("payload") if isinstance(value, dict) else None
        number = payload.get("value") if isinstance(payload, dict) else None
        return number if isinstance(number, int) and not isinstance(number, bool) else 0

    sdf = app.dataframe(topic)
    sdf = sdf.update(count)
    sdf = sdf.apply(value_of)
    sdf = sdf.tumbling_window(duration_ms=3_600_000).sum().final()
    app.run(sdf)
    print(json.dumps({"records": int(seen["n"]), "elapsed": seen["t1"] - seen["t0"]}))


if __name__ == "__main__":
    main()
