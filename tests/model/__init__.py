"""An independent reference model of meterstream's semantics (SPEC §3 + docs/semantics.md), written without
reading the processor's code, plus the hypothesis strategies that drive property tests against it."""
