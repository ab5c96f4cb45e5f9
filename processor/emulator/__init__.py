"""A local Stripe billing emulator: Stripe's billing-meter API surface, in memory, for tests and demos.

It implements meters, meter events (v1, v2 and the v2 stream with sessions), adjustments, event
summaries and customers with Stripe's rules, error shapes and status codes, plus fault injection and a
controllable clock (see ``docs/stripe-emulator.md``). Its semantics are its own code, independent of the
processor's, so tests that compare the two check both.
"""

from processor.emulator.faults import FaultConfig
from processor.emulator.server import EmulatorConfig, EmulatorServer, build_app, serve
from processor.emulator.state import Emulator

__all__ = ["Emulator", "EmulatorConfig", "EmulatorServer", "FaultConfig", "build_app", "serve"]
