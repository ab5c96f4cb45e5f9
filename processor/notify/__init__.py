"""Stripe's error reports for meter events: thin ``v1.billing.meter.error_report_triggered`` and
``v1.billing.meter.no_meter_found`` events, built from ``meter-event-errors`` and delivered, signed, to
event destinations (docs/notifications.md)."""
