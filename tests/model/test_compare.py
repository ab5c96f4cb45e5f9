"""``compare`` against a real Redis: it must report every kind of difference, and only real ones."""

from __future__ import annotations

import pytest
import redis

from tests.model.reference import ModelResult, compare

pytestmark = pytest.mark.integration

TS = 1_700_006_400


def _model() -> ModelResult:
    return ModelResult(
        hour={("mtr_s", "cus_1"): {TS: 5, TS + 3600: 0}, ("mtr_l", "cus_1"): {TS: -7}},
        day={("mtr_s", "cus_1"): {TS: 5}, ("mtr_l", "cus_1"): {TS: -7}},
        customers={"mtr_s": {"cus_1": TS + 3600}, "mtr_l": {"cus_1": TS}},
        formulas={"mtr_s": "sum", "mtr_l": "last"},
    )


def _write_agreeing(r: redis.Redis, p: str) -> None:
    r.hset(f"{p}:usage:{{mtr_s:cus_1}}:hour", mapping={str(TS): "5"})  # the "0" bucket may be absent
    r.hset(f"{p}:usage:{{mtr_s:cus_1}}:day", mapping={str(TS): "5", str(TS + 86_400): "0"})  # or hold "0"
    r.hset(f"{p}:usage:{{mtr_l:cus_1}}:hour", mapping={str(TS): "-7"})
    r.hset(f"{p}:usage:{{mtr_l:cus_1}}:day", mapping={str(TS): "-7"})
    r.zadd(f"{p}:customers:{{mtr_s}}", {"cus_1": TS + 3600})
    r.zadd(f"{p}:customers:{{mtr_l}}", {"cus_1": TS})


def test_agreeing_state_has_no_differences(redis_client: redis.Redis, unique: str) -> None:
    prefix = f"cmp{unique}"
    _write_agreeing(redis_client, prefix)
    assert compare(_model(), redis_client, prefix) == []
    assert compare(ModelResult(), redis_client, f"other{unique}") == []


def test_every_kind_of_difference_is_reported(redis_client: redis.Redis, unique: str) -> None:
    prefix = f"cmp{unique}"
    _write_agreeing(redis_client, prefix)
    redis_client.hset(f"{prefix}:usage:{{mtr_s:cus_1}}:hour", str(TS), "6")  # wrong value
    redis_client.hset(f"{prefix}:usage:{{mtr_l:cus_1}}:hour", str(TS + 3600), "0")  # a last bucket the model lacks
    redis_client.delete(f"{prefix}:usage:{{mtr_l:cus_1}}:day")  # a missing last bucket
    redis_client.hset(f"{prefix}:usage:{{mtr_x:cus_9}}:day", str(TS), "1")  # a meter/customer the model lacks
    redis_client.set(f"{prefix}:usage:garbage", "1")
    redis_client.zadd(f"{prefix}:customers:{{mtr_s}}", {"cus_1": TS, "cus_2": TS})  # wrong score, extra member
    diffs = compare(_model(), redis_client, prefix)
    text = "\n".join(diffs)
    assert len(diffs) == 7, text
    assert f"{prefix}:usage:{{mtr_s:cus_1}}:hour field {TS}" in text and "redis='6' model='5'" in text
    assert f"{prefix}:usage:{{mtr_l:cus_1}}:hour field {TS + 3600}" in text and "redis='0' model=None" in text
    assert f"{prefix}:usage:{{mtr_l:cus_1}}:day field {TS}" in text and "redis=None model='-7'" in text
    assert f"{prefix}:usage:{{mtr_x:cus_9}}:day" in text
    assert f"unexpected key {prefix}:usage:garbage" in text
    assert f"{prefix}:customers:{{mtr_s}} member 'cus_1'" in text
    assert f"{prefix}:customers:{{mtr_s}} member 'cus_2'" in text
