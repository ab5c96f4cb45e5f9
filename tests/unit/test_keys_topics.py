from __future__ import annotations

import binascii

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.state.keys import Keys, identifier_digest
from topics import CATALOG, load_schema, topic_name


def _slot(key: str) -> int:
    """Redis Cluster's key slot: CRC16 of the hash tag (or the key)."""
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return binascii.crc_hqx(key.encode(), 0) % 16384


def test_public_key_formats_are_the_contract() -> None:
    k = Keys("ms")
    assert k.meters == "ms:meters"
    assert k.usage_hour("mtr_1", "cus_1") == "ms:usage:{mtr_1:cus_1}:hour"
    assert k.usage_day("mtr_1", "cus_1") == "ms:usage:{mtr_1:cus_1}:day"
    assert k.customers("mtr_1") == "ms:customers:{mtr_1}"


@given(meter=st.from_regex(r"mtr_[A-Za-z0-9]{1,20}", fullmatch=True), customer=st.text(min_size=1, max_size=60))
def test_apply_step_keys_share_one_slot(meter: str, customer: str) -> None:
    k = Keys("ms")
    slots = {
        _slot(k.usage_hour(meter, customer)),
        _slot(k.usage_day(meter, customer)),
        _slot(k.watermark(meter, customer)),
        _slot(k.candidates(meter, customer, 3600)),
        _slot(k.best(meter, customer, 3600)),
    }
    assert len(slots) == 1


@given(st.text(min_size=1, max_size=100))
def test_identifier_digest_is_short_and_stable(identifier: str) -> None:
    d = identifier_digest(identifier)
    assert len(d) == 16
    assert d == identifier_digest(identifier)
    assert "{" not in d and "}" not in d


def test_catalog_names_and_schemas() -> None:
    names = {t.name for t in CATALOG}
    assert names == {
        "meter-events",
        "meter-event-adjustments",
        "meters",
        "meter-events-accepted",
        "meter-event-errors",
        "meter-events-stripe-dlq",
    }
    meters = next(t for t in CATALOG if t.name == "meters")
    assert meters.configs["cleanup.policy"] == "compact"
    for spec in CATALOG:
        jsonschema.Draft202012Validator.check_schema(load_schema(spec.name))
    assert topic_name("meter-events", "p.") == "p.meter-events"
    with pytest.raises(KeyError):
        topic_name("nope")


def test_event_schema_accepts_stripe_shape() -> None:
    schema = load_schema("meter-events")
    jsonschema.validate({"event_name": "api", "payload": {"stripe_customer_id": "cus_1", "value": 3}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"event_name": "api", "payload": {"nested": {"x": 1}}}, schema)


def test_every_topic_is_named_once_by_the_catalog_and_the_enum() -> None:
    from topics import CATALOG, Topic

    assert [spec.name for spec in CATALOG] == list(Topic)
    assert all(isinstance(spec.name, Topic) for spec in CATALOG)
    assert Topic.ACCEPTED == "meter-events-accepted" and f"p.{Topic.EVENTS}" == "p.meter-events"
