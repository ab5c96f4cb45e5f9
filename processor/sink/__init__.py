"""The Stripe sink: forwards ``meter-events-accepted`` to Stripe (see docs/sink.md)."""
