"""The README's "A first session", run as written against `meterstream up`: the second terminal gets its
settings only from the `export` lines `up` printed, runs the README's commands (its code block, parsed
from README.md) and ends with non-zero usage — on whatever date the test runs."""

from __future__ import annotations

import json
import re
import shlex
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from processor.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

README = Path(__file__).resolve().parents[2] / "README.md"
DAY = 86_400


def first_session_commands() -> list[list[str]]:
    """The ``meterstream`` lines of the README's first-session code block, comments dropped."""
    text = README.read_text()
    section = text[text.index("## A first session") :]
    block = section[section.index("```sh\n") + 6 :]
    block = block[: block.index("```")]
    commands = []
    for line in block.splitlines():
        words = shlex.split(re.sub(r"<identifier[^>]*>", "<identifier>", line), comments=True)
        if words:
            assert words[0] == "meterstream", line
            commands.append(words[1:])
    return commands


def usage_table(output: str) -> tuple[dict[str, str], list[list[str]]]:
    lines = output.splitlines()
    head = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in lines[:3]}
    assert lines[4].split() == ["start", "end", "value"], output
    return head, [line.split() for line in lines[5:]]


def test_readme_first_session_shows_usage(running_up: dict[str, str]) -> None:
    exports = json.loads(running_up["exports"])
    assert {
        "METERSTREAM_KAFKA_BOOTSTRAP",
        "METERSTREAM_REDIS_URL",
        "METERSTREAM_API_KEYS",
        "METERSTREAM_STRIPE_API_KEY",
        "METERSTREAM_STRIPE_API_BASE",
    } <= set(exports), running_up["output"]
    assert exports["METERSTREAM_STRIPE_API_BASE"] == running_up["stripe"]  # the emulator, never api.stripe.com
    assert exports["METERSTREAM_API_KEYS"] == running_up["api key"]
    assert "EPHEMERAL" in running_up["output"]  # without --data nothing survives `up`, and it says so

    runner = CliRunner()
    last_identifier = None
    usage_out = ""
    for args in first_session_commands():
        args = [last_identifier or "" if a == "<identifier>" else a for a in args]
        if args[0] == "usage":
            deadline = time.monotonic() + 60  # the processor applies the events asynchronously
            while time.monotonic() < deadline:
                result = runner.invoke(main, args, env=exports)
                assert result.exit_code == 0, result.output
                usage_out = result.stdout
                if usage_table(usage_out)[1][-1][-1] != "0":
                    break
                time.sleep(0.5)
            continue
        result = runner.invoke(main, args, env=exports)
        assert result.exit_code == 0, (args, result.output)
        if args[:2] == ["events", "send"]:
            last_identifier = result.stdout.splitlines()[0]

    head, rows = usage_table(usage_out)
    assert head["customer"] == "cus_123" and "(api_requests, sum)" in head["meter"]
    today = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime())
    days = rows[:-1]
    assert len(days) == 7 and days[-1][0] == today
    assert [d[2] for d in days] == ["0"] * 6 + ["25"]  # 25 + 10, the 10 cancelled
    assert rows[-1] == ["total", "25"]

    # the same exports reach the emulator: reconcile compares Redis with "Stripe" once the sink caught up
    deadline = time.monotonic() + 90
    while True:
        checked = runner.invoke(main, ["reconcile", "--meter", "api_requests", "--last", "1d", "-q"], env=exports)
        if checked.exit_code == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert checked.exit_code == 0, checked.output
    assert checked.stdout.splitlines()[-1] == "0 of 1 customer(s) drift (0 bucket(s))"
