"""Run every benchmark: ``python -m bench [processor|sink|gateway ...]``."""

from __future__ import annotations

import importlib
import sys

BENCHES = {"processor": "bench.processor_bench", "sink": "bench.sink_bench", "gateway": "bench.gateway_bench"}


def main() -> None:
    names = sys.argv[1:] or list(BENCHES)
    for name in names:
        try:
            module = importlib.import_module(BENCHES[name])
        except ModuleNotFoundError as exc:
            print(f"# {name}: not available ({exc})", file=sys.stderr)
            continue
        module.main()


if __name__ == "__main__":
    main()
