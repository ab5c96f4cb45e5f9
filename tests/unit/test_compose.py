"""docker-compose.yml cannot be started here (no Docker engine); check that it matches the CLI and settings."""

from __future__ import annotations

from pathlib import Path

import yaml

from processor.cli import main
from processor.config import load_settings


def test_compose_services_use_real_commands_and_settings(repo_root: Path) -> None:
    compose = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "redis", "processor", "sink", "gateway"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    assert services["processor"]["deploy"]["replicas"] == 2
    for name, svc in services.items():
        if svc.get("build"):
            command = svc["command"][0]
            assert command in main.commands, f"{name}: unknown meterstream command {command}"
            env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
            env = {k: v.split(":-", 1)[-1].rstrip("}") if v.startswith("${") else v for k, v in env.items()}
            load_settings(env)  # every variable is known and valid
