"""Processor state in Redis: key formats (keys.py), the Lua steps (lua/) and their Python edge (store.py)."""
