"""Where a processor's time goes, per stage, measured the same way on any version of the code.

    cd /tmp && PYTHONPATH=<code>:<this repo> python <this repo>/bench/stage_probe.py [N]

``<code>`` is the directory holding the ``processor`` package to measure (this repo, or e.g. ``git archive
<commit> processor | tar -x -C /tmp/old``), so docs/scaling.md's before/after table compares two versions
with one instrument. It produces the ``python -m bench processor`` adversarial workload (N records, default
200,000) to an embedded broker, runs one Processor in this process, and times by wrapping methods both
versions have: the JSON decode (``validate._decode``, and ``engine.loads_fast`` where it exists),
``Engine.validate`` (decode + validate), ``StateStore.claim`` / ``apply`` / ``touch_customers`` (the Redis
steps: argument building, round trip, Lua), ``Engine.process`` (the rest of it is the engine's own work:
claim and apply operations, accepted records), ``Processor._emit`` (produce + flush) and ``_commit``.
Prints one JSON object of µs per record. The wrappers cost about 0.2 µs per wrapped call.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from bench.processor_bench import _produce, bench_setup
from processor.aggregator import engine as engine_mod
from processor.aggregator import runner as runner_mod
from processor.aggregator import validate as validate_mod
from processor.embedded import EmbeddedKafka, EmbeddedRedis
from processor.state import store as store_mod

SPENT: defaultdict[str, float] = defaultdict(float)


def _timed(owner: Any, name: str, stage: str) -> None:
    if not hasattr(owner, name):
        return
    inner: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            SPENT[stage] += time.perf_counter() - t

    setattr(owner, name, wrapper)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    _timed(validate_mod, "_decode", "decode")
    _timed(engine_mod, "loads_fast", "decode")
    _timed(engine_mod.Engine, "validate", "decode+validate")
    _timed(store_mod.StateStore, "claim", "claim")
    _timed(store_mod.StateStore, "apply", "apply")
    _timed(store_mod.StateStore, "touch_customers", "apply")
    _timed(engine_mod.Engine, "process", "engine")
    _timed(runner_mod.Processor, "_emit", "produce")
    _timed(runner_mod.Processor, "_commit", "commit")
    work = tempfile.mkdtemp(prefix="bench-probe-")
    with EmbeddedKafka(workdir=work) as kafka, EmbeddedRedis(workdir=work) as redis_srv:
        _, settings = bench_setup(kafka.bootstrap, redis_srv.url)
        _produce(settings, n, "adversarial")
        proc = runner_mod.Processor(settings)
        proc._setup()
        while not proc._assigned:
            proc.poll_batch(0.1)
        SPENT.clear()
        t0 = time.perf_counter()
        while proc.stats["records"] < n:
            proc.poll_batch(0.5)
        elapsed = time.perf_counter() - t0
        proc.close()

    def us(seconds: float) -> float:
        return round(seconds / n * 1e6, 2)

    own = SPENT["engine"] - SPENT["decode+validate"] - SPENT["claim"] - SPENT["apply"]
    print(
        json.dumps(
            {
                "code": os.path.dirname(os.path.dirname(engine_mod.__file__)),
                "records": n,
                "us_per_record": {
                    "decode": us(SPENT["decode"]),
                    "validate": us(SPENT["decode+validate"] - SPENT["decode"]),
                    "claim (Redis step)": us(SPENT["claim"]),
                    "apply (Redis step)": us(SPENT["apply"]),
                    "engine's own work (ops, accepted records)": us(own),
                    "produce": us(SPENT["produce"]),
                    "commit": us(SPENT["commit"]),
                    "wall": us(elapsed),
                },
                "records_per_s": round(n / elapsed),
                "load_average": os.getloadavg()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
