"""Helpers shared by the docker-compose and Kubernetes manifest tests: resolve a ``meterstream`` argument
list against the real click CLI without running it, expand compose-style and Kubernetes-style variable
references, and split ``host:port`` out of the settings that name a server."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from urllib.parse import urlparse

import click

from processor.cli import main

__all__ = ["compose_interpolate", "k8s_expand", "parse_cli", "server_addresses"]


def parse_cli(args: Sequence[str]) -> click.Context:
    """The context of the leaf command ``meterstream ARGS`` names, built by click's own ``make_context``:
    every option is parsed and converted (types, ranges, choices, required options) exactly as at run time,
    but no callback runs. Raises a :class:`click.ClickException` subclass when the arguments are wrong."""
    parent = click.Context(main, info_name="meterstream")
    command: click.Command = main
    name = "meterstream"
    rest = list(args)
    while isinstance(command, click.Group):
        if not rest or rest[0].startswith("-"):
            raise click.UsageError(f"{name}: a subcommand is needed, got {rest!r}")
        found_name, found, rest = command.resolve_command(parent, rest)
        assert found is not None and found_name is not None
        name, command = found_name, found
        if isinstance(command, click.Group):
            parent = click.Context(command, info_name=name, parent=parent)
    return command.make_context(name, rest, parent=parent)


_COMPOSE_VAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?)(?P<arg>[^}]*))?\}")


def compose_interpolate(value: str, env: Mapping[str, str]) -> str:
    """Docker Compose's interpolation (``$$``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``${VAR?error}``) with ``env`` as the shell's environment."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg") or ""
        have = env.get(name)
        if op == ":-":
            return have if have else arg
        if op == "-":
            return arg if have is None else have
        if op in (":?", "?") and (have is None or (op == ":?" and not have)):
            raise KeyError(f"{name} is required: {arg}")
        return have or ""

    return _COMPOSE_VAR.sub(repl, value)


_K8S_VAR = re.compile(r"\$\((?P<name>[A-Za-z_][A-Za-z0-9_]*)\)")


def k8s_expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in container ``env`` values; unknown references stay as written,
    as the kubelet leaves them."""
    return _K8S_VAR.sub(lambda m: env.get(m.group("name"), m.group(0)), value)


_URL_SETTINGS = ("METERSTREAM_REDIS_URL", "METERSTREAM_STRIPE_API_BASE")


def server_addresses(env: Mapping[str, str]) -> dict[str, tuple[str, int]]:
    """``{variable: (host, port)}`` for every setting that names a server (bootstrap list entries are
    reported as ``METERSTREAM_KAFKA_BOOTSTRAP[i]``)."""
    found: dict[str, tuple[str, int]] = {}
    for i, part in enumerate((env.get("METERSTREAM_KAFKA_BOOTSTRAP") or "").split(",")):
        if part:
            host, _, port = part.rpartition(":")
            found[f"METERSTREAM_KAFKA_BOOTSTRAP[{i}]"] = (host, int(port))
    for name in _URL_SETTINGS:
        if env.get(name):
            url = urlparse(env[name])
            assert url.hostname, f"{name} has no host"
            default = {"redis": 6379, "rediss": 6379, "http": 80, "https": 443}[url.scheme]
            found[name] = (url.hostname, url.port or default)
    return found
