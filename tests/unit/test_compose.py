"""docker-compose.yml and the Dockerfile cannot be started here (no Docker engine), so their contract is
checked statically: structure, start order, health checks, every command against the real click CLI,
every variable against the real settings, every server address against the compose services."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import click
import pytest
import yaml

from processor.config import load_settings
from tests.deploy.helpers import compose_interpolate, parse_cli, server_addresses

LONG_RUNNING = ("kafka", "redis", "stripe-emulator", "processor", "sink", "gateway")
INIT = ("topics", "meters-sync")
PIPELINE = ("processor", "sink", "gateway")


@pytest.fixture
def compose(repo_root: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    return data


@pytest.fixture
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def _ours(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Services that run the project's image (ENTRYPOINT meterstream)."""
    return {name: svc for name, svc in services.items() if svc.get("build")}


def _env(svc: dict[str, Any], shell: dict[str, str] | None = None) -> dict[str, str]:
    """The service's environment as the container sees it (interpolated against ``shell``)."""
    raw = svc.get("environment") or {}
    assert isinstance(raw, dict), "environment must be a mapping (lists hide duplicates)"
    return {k: compose_interpolate(str(v), shell or {}) for k, v in raw.items()}


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def _listen_port(services: dict[str, dict[str, Any]], name: str) -> int:
    """The port a compose service listens on, read from its own configuration (not assumed)."""
    svc = services[name]
    if name == "kafka":
        listeners = svc["environment"]["KAFKA_LISTENERS"]
        return int(re.search(r"PLAINTEXT://[^:]*:(\d+)", listeners).group(1))  # type: ignore[union-attr]
    if name == "redis":
        cmd = svc["command"]
        return int(_option(cmd, "--port")) if "--port" in cmd else 6379
    return int(_option(svc["command"], "--port"))


# ---- structure -------------------------------------------------------------------------------------


def test_services_and_images(services: dict[str, dict[str, Any]]) -> None:
    assert set(LONG_RUNNING + INIT) <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["redis"]["image"].startswith("redis:")
    assert services["stripe-mock"]["image"].startswith("stripe/stripe-mock:")
    # stripe-mock keeps no state, so nothing may depend on it; it is opt-in.
    assert services["stripe-mock"]["profiles"] == ["stripe-mock"]
    ours = _ours(services)
    assert set(ours) == {"stripe-emulator", *INIT, *PIPELINE}
    assert {svc["build"] for svc in ours.values()} == {"."}
    assert len({svc["image"] for svc in ours.values()}) == 1, "one image for every component"


def test_kafka_is_single_node_kraft(services: dict[str, dict[str, Any]]) -> None:
    env = services["kafka"]["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in key for key in env)
    node = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node}@kafka:9093"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://kafka:{_listen_port(services, 'kafka')}"
    # One broker: internal topics cannot have more replicas than brokers.
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):
        assert env[key] == 1
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_redis_uses_aof_on_a_volume(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    cmd = services["redis"]["command"]
    assert _option(cmd, "--appendonly") == "yes"
    assert "redis-data:/data" in services["redis"]["volumes"]
    assert "kafka-data:/var/lib/kafka/data" in services["kafka"]["volumes"]
    assert services["kafka"]["environment"]["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"
    declared = set(compose["volumes"])
    for name, svc in services.items():
        for mount in svc.get("volumes", []):
            source = mount.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: named volume {source} is not declared"


def test_processor_runs_two_replicas(services: dict[str, dict[str, Any]]) -> None:
    assert services["processor"]["deploy"]["replicas"] == 2
    # Replicas cannot share a published port.
    assert "ports" not in services["processor"]


def test_every_long_running_service_has_a_health_check(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        if svc.get("restart") == "no":
            assert "healthcheck" not in svc, f"{name} is one-shot"
            continue
        assert name in LONG_RUNNING or name == "stripe-mock", f"unexpected long-running service {name}"
        test = svc["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name


def test_start_order(services: dict[str, dict[str, Any]]) -> None:
    deps = {name: svc.get("depends_on", {}) for name, svc in services.items()}
    for name, needs in deps.items():
        for target, spec in needs.items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health, it has none"
            elif condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", f"{target} must be one-shot"
            else:
                pytest.fail(f"{name} → {target}: {condition} does not wait for readiness")
    assert deps["topics"] == {"kafka": {"condition": "service_healthy"}}
    assert deps["meters-sync"]["topics"] == {"condition": "service_completed_successfully"}
    assert deps["meters-sync"]["redis"] == {"condition": "service_healthy"}
    for name in PIPELINE:
        assert deps[name]["meters-sync"] == {"condition": "service_completed_successfully"}, name
        assert deps[name]["kafka"] == deps[name]["redis"] == {"condition": "service_healthy"}, name
    assert deps["sink"]["stripe-emulator"] == {"condition": "service_healthy"}

    order: list[str] = []  # a topological order exists (no cycle)
    pending = dict(deps)
    while pending:
        ready = [n for n, needs in pending.items() if set(needs) <= set(order)]
        assert ready, f"dependency cycle among {sorted(pending)}"
        order.extend(sorted(ready))
        for n in ready:
            del pending[n]
    assert order.index("topics") < order.index("meters-sync") < min(order.index(n) for n in PIPELINE)


# ---- commands against the real CLI -----------------------------------------------------------------


def test_parse_cli_rejects_what_the_cli_rejects() -> None:
    """The helper below must be able to fail, or the command checks prove nothing."""
    for bad in (
        ["no-such-command"],
        ["processor", "--metrics-port", "http"],
        ["processor", "--metrics-port", "70000"],
        ["gateway", "--workers", "0"],
        ["sink", "--unknown"],
        ["topics"],
        ["topics", "render"],  # --cluster is required
        ["topics", "render", "--cluster", "c", "--format", "helm"],
    ):
        with pytest.raises(click.ClickException):
            parse_cli(bad)
    ctx = parse_cli(["processor", "--metrics-port", "9100"])
    assert ctx.command.name == "processor" and ctx.params == {"metrics_port": 9100}


def test_every_command_parses_with_the_cli(services: dict[str, dict[str, Any]]) -> None:
    for svc in _ours(services).values():
        parse_cli(svc["command"])  # raises on an unknown command or option, or a bad value
        test = svc.get("healthcheck", {}).get("test", [])
        if test[1:2] == ["meterstream"]:
            parse_cli(test[2:])
    assert parse_cli(services["topics"]["command"]).command.name == "ensure"
    assert parse_cli(services["meters-sync"]["command"]).command.name == "sync"


def test_http_health_checks_probe_the_ports_the_commands_open(services: dict[str, dict[str, Any]]) -> None:
    expected = {
        "processor": (int(parse_cli(services["processor"]["command"]).params["metrics_port"]), "/metrics"),
        "sink": (int(parse_cli(services["sink"]["command"]).params["metrics_port"]), "/metrics"),
        "gateway": (int(parse_cli(services["gateway"]["command"]).params["port"]), "/healthz"),
        "stripe-emulator": (int(parse_cli(services["stripe-emulator"]["command"]).params["port"]), "/_emulator/health"),
    }
    for name, (port, path) in expected.items():
        test = services[name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], name
        url = urlparse(re.search(r"'(http://[^']+)'", test[3]).group(1))  # type: ignore[union-attr]
        assert (url.port, url.path) == (port, path), name
    # Services that listen for other containers listen on every interface.
    for name in ("gateway", "stripe-emulator"):
        assert parse_cli(services[name]["command"]).params["host"] == "0.0.0.0"
    assert services["gateway"]["ports"] == [f"8080:{expected['gateway'][0]}"]


# ---- variables against the real settings -----------------------------------------------------------


def test_environment_is_valid_settings(services: dict[str, dict[str, Any]]) -> None:
    for shell in ({}, {"METERSTREAM_STRIPE_API_KEY": "sk_live_from_shell", "METERSTREAM_STRIPE_MODE": "v1"}):
        for name, svc in _ours(services).items():
            env = _env(svc, shell)
            assert not any("$" in v for v in env.values()), f"{name}: uninterpolated {env}"
            assert all(k.startswith("METERSTREAM_") for k in env), name
            settings = load_settings(env)  # unknown or invalid variables raise ConfigError
            assert bool(settings.kafka_bootstrap) == (name != "stripe-emulator"), name
            assert bool(settings.redis_url) == (name not in ("stripe-emulator", "topics")), name
    sink = load_settings(_env(services["sink"], {"METERSTREAM_STRIPE_API_KEY": "sk_live_x"}))
    assert sink.stripe_api_key.reveal() == "sk_live_x", "the shell's key must reach the sink"
    assert load_settings(_env(services["sink"])).stripe_api_key, "the sink refuses to start without a key"
    assert load_settings(_env(services["gateway"])).api_keys, "the gateway refuses every request without keys"
    gateway = load_settings(_env(services["gateway"]))
    assert gateway.gateway_port == parse_cli(services["gateway"]["command"]).params["port"]


def test_secrets_go_only_where_they_are_used(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in _ours(services).items():
        env = _env(svc)
        assert ("METERSTREAM_STRIPE_API_KEY" in env) == (name == "sink"), name
        assert ("METERSTREAM_API_KEYS" in env) == (name == "gateway"), name


def test_every_server_address_names_a_service_and_its_port(services: dict[str, dict[str, Any]]) -> None:
    checked = 0
    for name, svc in _ours(services).items():
        for variable, (host, port) in server_addresses(_env(svc)).items():
            assert host in services, f"{name}: {variable} names {host}, not a compose service"
            assert port == _listen_port(services, host), f"{name}: {variable} port {port}"
            needs = svc.get("depends_on", {})
            assert host in needs, f"{name} uses {host} ({variable}) without waiting for it"
            checked += 1
    assert checked == 10  # bootstrap everywhere, Redis where it is used, the Stripe base for the sink


# ---- Dockerfile ------------------------------------------------------------------------------------


def _dockerfile(repo_root: Path) -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (repo_root / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_runtime_image(repo_root: Path) -> None:
    steps = _dockerfile(repo_root)
    froms = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    final = steps[froms[-1] :]
    assert final[0][1].split()[0] == "python:3.11-slim"
    users = [args for word, args in final if word == "USER"]
    assert users, "the runtime stage must not run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root UID (Kubernetes runAsNonRoot checks it)"
    pyproject = tomllib.loads((repo_root / "pyproject.toml").read_text())
    scripts = pyproject["project"]["scripts"]
    entrypoint = [args for word, args in final if word == "ENTRYPOINT"][-1]
    assert yaml.safe_load(entrypoint) == ["meterstream"] and "meterstream" in scripts
    # Installed as a package (so the console script exists), not run from a source checkout.
    assert any(word == "RUN" and "pip install" in args for word, args in final)


def test_dockerfile_copies_the_package_and_dockerignore_keeps_it(repo_root: Path) -> None:
    steps = _dockerfile(repo_root)
    copied = {args.split()[0] for word, args in steps if word == "COPY" and not args.startswith("--from")}
    copied |= {p for word, args in steps if word == "COPY" and not args.startswith("--from") for p in args.split()[:-1]}
    pyproject = tomllib.loads((repo_root / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"pyproject.toml", pyproject["project"]["readme"]} <= copied
    ignored = {
        line.strip().rstrip("/")
        for line in (repo_root / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for path in copied:
        assert (repo_root / path).exists(), path
        assert path not in ignored, f"{path} is copied but .dockerignore excludes it"
    assert {".git", ".venv", "tests"} <= ignored
