"""``meterstream topics ensure|render``: create or check the catalog's topics, or render them as
Kubernetes resources (Strimzi ``KafkaTopic``) for clusters where an operator owns the topics."""

from __future__ import annotations

import click

from processor.config import Settings
from processor.kafka.admin import ensure_topics


@click.group()
def topics() -> None:
    """Manage the topics of the catalog (SPEC §2)."""


@topics.command("ensure")
@click.option("--check", is_flag=True, help="Only check; create nothing. Exit 1 on drift or missing topics.")
@click.pass_obj
def ensure(settings: Settings, check: bool) -> None:
    """Create missing topics and report drift (idempotent: safe to run any time)."""
    reports = ensure_topics(settings, check_only=check)
    for report in reports:
        click.echo(report.line())
    if check and any(r.status != "ok" for r in reports):
        raise SystemExit(1)


@topics.command("render")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["strimzi"]),
    default="strimzi",
    show_default=True,
    help="Output format: strimzi = KafkaTopic resources (kafka.strimzi.io/v1beta2).",
)
@click.option("--cluster", required=True, help="Name of the Strimzi Kafka resource (the strimzi.io/cluster label).")
@click.option("--prefix", default=None, help="Topic prefix (default: METERSTREAM_TOPIC_PREFIX).")
@click.option("--replicas", type=click.IntRange(1, 32767), default=3, show_default=True, help="Replication factor.")
@click.option(
    "--partitions",
    type=click.IntRange(1, 10_000),
    default=None,
    help="Partitions of the multi-partition topics (default: METERSTREAM_TOPIC_PARTITIONS, else the catalog).",
)
@click.option(
    "--namespace", default=None, help="metadata.namespace of every resource (default: none; kustomize sets it)."
)
@click.pass_obj
def render(
    settings: Settings,
    fmt: str,
    cluster: str,
    prefix: str | None,
    replicas: int,
    partitions: int | None,
    namespace: str | None,
) -> None:
    """Print the catalog's topics as Kubernetes resources (YAML on stdout); needs no broker."""
    from topics.strimzi import render_strimzi

    try:
        text = render_strimzi(
            cluster,
            prefix=settings.topic_prefix if prefix is None else prefix,
            replicas=replicas,
            partitions=settings.topic_partitions if partitions is None else partitions,
            namespace=namespace,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(text, nl=False)
