"""Processor state in Redis: key formats (keys.py), the Lua steps (lua/), their ops and answers as types
(steps.py), running a script per hash slot (scripts.py) and the processor's Python edge (store.py)."""
