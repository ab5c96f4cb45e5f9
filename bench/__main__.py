"""Run every benchmark: ``python -m bench [processor|sink|gateway|memory ...]``."""

from __future__ import annotations

import importlib
import sys

BENCHES = {
    "processor": "bench.processor_bench",
    "sink": "bench.sink_bench",
    "gateway": "bench.gateway_bench",
    "memory": "bench.memory_bench",
}


def main() -> None:
    # the names come first; options after them (``--events N``) are the benchmarks' own, each parses sys.argv
    names: list[str] = []
    for arg in sys.argv[1:]:
        if arg.startswith("-"):
            break
        if arg not in BENCHES:
            sys.exit(f"unknown benchmark {arg!r} (choose from {', '.join(BENCHES)})")
        names.append(arg)
    names = names or list(BENCHES)
    for name in names:
        try:
            module = importlib.import_module(BENCHES[name])
        except ModuleNotFoundError as exc:
            print(f"# {name}: not available ({exc})", file=sys.stderr)
            continue
        module.main()


if __name__ == "__main__":
    main()
