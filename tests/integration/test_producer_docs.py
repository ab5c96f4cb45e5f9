"""The "Reading a topic" snippet of docs/topics.md (also shown in the README), run exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from processor import MeterEventProducer, Settings

pytestmark = pytest.mark.integration


def _snippet(repo_root: Path) -> str:
    text = (repo_root / "docs" / "topics.md").read_text(encoding="utf-8")
    section = text.split("\n## Reading a topic\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python block in the 'Reading a topic' section"
    return match.group(1)


def test_reading_a_topic_snippet_prints_the_events(
    settings: Settings, repo_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with MeterEventProducer(settings) as producer:
        first = producer.send("api_requests", {"stripe_customer_id": "cus_1", "value": 25})
        second = producer.send("api_requests", {"stripe_customer_id": "cus_2", "value": "3"}, identifier="req-42")
    assert settings.kafka_bootstrap
    monkeypatch.setenv("METERSTREAM_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    monkeypatch.setenv("METERSTREAM_TOPIC_PREFIX", settings.topic_prefix)

    exec(compile(_snippet(repo_root), "docs/topics.md", "exec"), {"__name__": "__snippet__"})

    lines = sorted(capsys.readouterr().out.splitlines())
    assert lines == [
        f"cus_1 api_requests {{'stripe_customer_id': 'cus_1', 'value': 25}} {first}",
        f"cus_2 api_requests {{'stripe_customer_id': 'cus_2', 'value': '3'}} {second}",
    ]
