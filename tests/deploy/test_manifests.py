"""deploy/ (kustomize): every manifest validates offline against the Kubernetes schemas (and the Strimzi
KafkaTopic schema vendored here), the committed KafkaTopics equal a fresh rendering of the catalog, and the
manifests agree with the code: commands parse with the real CLI, variables load with the real settings,
probes and Services point at ports the commands open, autoscaling stays within the partitions."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from processor.config import load_settings
from tests.deploy.helpers import k8s_expand, parse_cli
from tests.deploy.kustomize import Built, build, load_docs
from topics import CATALOG
from topics.strimzi import render_strimzi

#: The oldest Kubernetes release the manifests are checked against (and the newest the package knows).
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CLUSTER = "meterstream"
KUSTOMIZATIONS = ("base", "overlays/production")
STRIMZI_SCHEMA = json.loads((Path(__file__).parent / "strimzi-kafkatopic-v1beta2.schema.json").read_text())
COMPONENTS = ("processor", "sink", "gateway", "notifier")
#: Components without a liveness probe, and why: the notifier serves no port (a fatal error ends it).
NO_LIVENESS = {"notifier"}
#: Partitions the processor's consumer group reads (its replicas beyond this sit idle).
PROCESSOR_INPUTS = ("meter-events", "meter-event-adjustments")

Resource = dict[str, Any]


@pytest.fixture
def deploy(repo_root: Path) -> Path:
    return repo_root / "deploy"


@pytest.fixture(params=KUSTOMIZATIONS)
def built(request: pytest.FixtureRequest, deploy: Path) -> Built:
    return build(deploy / request.param)


def validate(resource: Resource, version: str) -> None:
    """Raise when ``resource`` is invalid: Kubernetes kinds strictly (unknown fields refused) against the
    schemas kubernetes-validate ships, KafkaTopic against the vendored Strimzi schema."""
    if resource.get("apiVersion", "").startswith("kafka.strimzi.io/"):
        jsonschema.Draft7Validator(STRIMZI_SCHEMA).validate(resource)
    else:
        kubernetes_validate.validate(resource, version, strict=True)


# ---- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_built_manifest_validates(built: Built, version: str) -> None:
    assert built.resources
    for resource in built.resources:
        validate(resource, version)


def test_every_committed_resource_file_validates(deploy: Path) -> None:
    """The base's files as written (the overlays' patches are partial by design and are validated merged)."""
    built = build(deploy / "base")
    files = [f for f in built.files if f.name != "kustomization.yaml"]
    assert {f.name for f in files} == {f.name for f in (deploy / "base").glob("*.yaml")} - {"kustomization.yaml"}
    for path in files:
        for doc in load_docs(path):
            validate(doc, K8S_VERSIONS[0])


def test_validation_can_fail() -> None:
    """Without these, the validation above could pass on anything."""
    deployment = build(Path(__file__).resolve().parents[2] / "deploy" / "base").get("Deployment", "meterstream-sink")
    typo = json.loads(json.dumps(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = typo["spec"]["template"]["spec"]["containers"][
        0
    ].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(typo, K8S_VERSIONS[0])
    wrong_type = json.loads(json.dumps(deployment))
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(wrong_type, K8S_VERSIONS[0])
    topic = yaml.safe_load_all(render_strimzi(CLUSTER)).__next__()
    for change in ({"partitions": 0}, {"replicas": "3"}, {"partition": 3}):
        bad = json.loads(json.dumps(topic))
        bad["spec"].update(change)
        with pytest.raises(jsonschema.ValidationError):
            validate(bad, K8S_VERSIONS[0])
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"}}, "1.30.0")


# ---- KafkaTopics from the catalog ------------------------------------------------------------------


def test_committed_kafka_topics_equal_the_generated_ones(deploy: Path) -> None:
    committed = (deploy / "base" / "kafka-topics.yaml").read_text()
    assert committed == render_strimzi(CLUSTER), (
        "deploy/base/kafka-topics.yaml is stale; regenerate it with "
        f"`meterstream topics render --format strimzi --cluster {CLUSTER} > deploy/base/kafka-topics.yaml`"
    )


def test_the_render_command_prints_the_committed_file(deploy: Path) -> None:
    from click.testing import CliRunner

    from processor.cli import main

    result = CliRunner().invoke(main, ["topics", "render", "--format", "strimzi", "--cluster", CLUSTER], env={})
    assert result.exit_code == 0, result.output
    assert result.output == (deploy / "base" / "kafka-topics.yaml").read_text()


def test_kafka_topics_match_the_catalog_and_the_configuration(built: Built) -> None:
    topics = {t["spec"]["topicName"]: t for t in built.of_kind("KafkaTopic")}
    config = built.get("ConfigMap", "meterstream-config")["data"]
    prefix = config["METERSTREAM_TOPIC_PREFIX"]
    assert set(topics) == {prefix + spec.name for spec in CATALOG}
    for spec in CATALOG:
        topic = topics[prefix + spec.name]
        assert topic["spec"]["partitions"] == spec.partitions
        assert {k: v for k, v in topic["spec"]["config"].items() if k in spec.configs} == spec.configs
    # The topics belong to the Kafka cluster the pipeline connects to (Strimzi: <cluster>-kafka-bootstrap).
    clusters = {t["metadata"]["labels"]["strimzi.io/cluster"] for t in topics.values()}
    hosts = {part.rpartition(":")[0].split(".")[0] for part in config["METERSTREAM_KAFKA_BOOTSTRAP"].split(",")}
    assert hosts == {f"{cluster}-kafka-bootstrap" for cluster in clusters}


# ---- the manifests agree with the code -------------------------------------------------------------


def _deployment(built: Built, component: str) -> Resource:
    return built.get("Deployment", f"meterstream-{component}")


def _container(built: Built, component: str) -> dict[str, Any]:
    containers = _deployment(built, component)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _environment(built: Built, container: dict[str, Any]) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """The container's environment as the kubelet builds it (envFrom, then env with ``$(VAR)`` expanded),
    with a placeholder for each secret; and ``{variable: (secret, key)}``."""
    env: dict[str, str] = {}
    secrets: dict[str, tuple[str, str]] = {}
    for source in container.get("envFrom", []):
        env.update(built.get("ConfigMap", source["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = k8s_expand(var["value"], env)
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            secrets[var["name"]] = (ref["name"], ref["key"])
            env[var["name"]] = f"placeholder-secret-{ref['key']}"
    return env, secrets


def test_components_run_the_cli_commands(built: Built) -> None:
    for component in COMPONENTS:
        container = _container(built, component)
        assert "command" not in container, "the image's ENTRYPOINT is meterstream"
        assert parse_cli(container["args"]).command.name == component
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            exec_command = container.get(probe, {}).get("exec", {}).get("command")
            if exec_command:
                assert exec_command[0] == "meterstream"
                parse_cli(exec_command[1:])
    with pytest.raises(click.ClickException):
        parse_cli(["processor", "--metrics-port", "metrics"])


def test_environment_is_valid_settings(built: Built) -> None:
    expected_secrets = {
        "processor": {"REDIS_PASSWORD"},
        "sink": {"REDIS_PASSWORD", "METERSTREAM_STRIPE_API_KEY"},
        "gateway": {"REDIS_PASSWORD", "METERSTREAM_API_KEYS"},
        "notifier": {"REDIS_PASSWORD"},
    }
    for component in COMPONENTS:
        env, secrets = _environment(built, _container(built, component))
        assert not any("$(" in value for value in env.values()), f"{component}: unresolved reference in {env}"
        assert set(secrets) == expected_secrets[component], component
        settings = load_settings({k: v for k, v in env.items() if k.startswith("METERSTREAM_")})
        assert settings.kafka_bootstrap and settings.redis_url
        assert "placeholder-secret-redis-password" in settings.redis_url
        assert bool(settings.stripe_api_key) == (component == "sink")
        assert bool(settings.api_keys) == (component == "gateway")


def test_no_secret_is_written_into_the_manifests(built: Built) -> None:
    secret_settings = {"METERSTREAM_STRIPE_API_KEY", "METERSTREAM_API_KEYS", "METERSTREAM_KAFKA_SASL_PASSWORD"}
    assert not built.of_kind("Secret"), "Secrets are created by the operator (deploy/README.md), never committed"
    for configmap in built.of_kind("ConfigMap"):
        assert not secret_settings & set(configmap["data"]), configmap["metadata"]["name"]
        assert not any(re.search(r"sk_(live|test)_|://[^/@]*:[^/@]+@", str(v)) for v in configmap["data"].values())
    for component in COMPONENTS:
        for var in _container(built, component).get("env", []):
            assert var["name"] not in secret_settings or "valueFrom" in var, f"{component}: {var['name']} literal"


def test_secret_references_are_documented(built: Built, deploy: Path) -> None:
    readme = (deploy / "README.md").read_text()
    refs = set()
    for component in COMPONENTS:
        refs |= set(_environment(built, _container(built, component))[1].values())
    assert {key for _, key in refs} == {"redis-password", "stripe-api-key", "gateway-api-keys"}
    for name, key in refs:
        assert f"--from-literal={key}=" in readme and name in readme, f"README: how to create {name}/{key}"


def test_probes_and_ports_match_the_commands(built: Built) -> None:
    ports = {}
    for component in COMPONENTS:
        container = _container(built, component)
        named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        ports[component] = named
        assert "readinessProbe" in container, component
        assert ("livenessProbe" in container) == (component not in NO_LIVENESS), component
        for probe_name in ("readinessProbe", "livenessProbe"):
            probe = container.get(probe_name, {})
            for kind in ("httpGet", "tcpSocket"):
                if kind in probe:
                    assert probe[kind]["port"] in named, f"{component} {probe_name}: unknown port"
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"], component
    for component in ("processor", "sink"):
        args = parse_cli(_container(built, component)["args"]).params
        assert ports[component] == {"metrics": args["metrics_port"]}, component
        assert _container(built, component)["livenessProbe"]["httpGet"]["path"] == "/metrics"
    env, _ = _environment(built, _container(built, "gateway"))
    gateway_args = parse_cli(_container(built, "gateway")["args"]).params
    assert ports["gateway"] == {"http": gateway_args["port"]} == {"http": int(env["METERSTREAM_GATEWAY_PORT"])}
    assert gateway_args["host"] == "0.0.0.0"
    gateway = _container(built, "gateway")
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert ports["notifier"] == {}  # no server: its readiness is the broker check the sink uses
    notifier = _container(built, "notifier")
    assert notifier["readinessProbe"] == _container(built, "sink")["readinessProbe"]


def _pods_selected(built: Built, selector: dict[str, str]) -> list[str]:
    return [
        d["metadata"]["name"]
        for d in built.of_kind("Deployment")
        if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
    ]


def test_deployment_selectors_match_their_pods(built: Built) -> None:
    for deployment in built.of_kind("Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        assert _pods_selected(built, selector) == [deployment["metadata"]["name"]], "selectors overlap"
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_services_and_budgets_select_one_deployment(built: Built) -> None:
    services = built.of_kind("Service")
    assert {s["metadata"]["name"] for s in services} == {"meterstream-gateway", "meterstream-processor-metrics"}
    for service in services:
        (name,) = _pods_selected(built, service["spec"]["selector"])
        deployment = built.get("Deployment", name)
        container_ports = {
            p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports, f"{service['metadata']['name']}: {port}"
    budgets = built.of_kind("PodDisruptionBudget")
    covered = [_pods_selected(built, b["spec"]["selector"]["matchLabels"]) for b in budgets]
    assert sorted(name for names in covered for name in names) == sorted(f"meterstream-{c}" for c in COMPONENTS)
    assert all(len(names) == 1 for names in covered)


def test_autoscaling(built: Built) -> None:
    hpas = {h["metadata"]["name"]: h for h in built.of_kind("HorizontalPodAutoscaler")}
    assert set(hpas) == {"meterstream-processor", "meterstream-gateway"}
    for hpa in hpas.values():
        target = hpa["spec"]["scaleTargetRef"]
        deployment = built.get(target["kind"], target["name"])
        assert "replicas" not in deployment["spec"], f"{target['name']}: the HPA owns the replica count"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # The sink is not autoscaled: its Stripe rate limit is per process (sink.yaml).
    assert "replicas" in _deployment(built, "sink")["spec"]
    # Nor the notifier: one instance reads the errors topic (two are safe, more do nothing useful).
    assert _deployment(built, "notifier")["spec"]["replicas"] == 1

    processor = hpas["meterstream-processor"]["spec"]
    partitions = min(spec.partitions for spec in CATALOG if spec.name in PROCESSOR_INPUTS)
    assert processor["maxReplicas"] <= partitions == 12
    (metric,) = processor["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == "kafka_consumergroup_lag"
    group = built.get("ConfigMap", "meterstream-config")["data"]["METERSTREAM_PROCESSOR_GROUP"]
    assert metric["external"]["metric"]["selector"]["matchLabels"] == {"consumergroup": group}
    accepted = next(spec for spec in CATALOG if spec.name == "meter-events-accepted")
    assert _deployment(built, "sink")["spec"]["replicas"] <= accepted.partitions


def test_production_overlay_changes_what_it_says(deploy: Path) -> None:
    base, production = build(deploy / "base"), build(deploy / "overlays" / "production")
    assert {r["metadata"].get("namespace") for r in production.resources} == {"meterstream"}
    images = {c["image"] for d in production.of_kind("Deployment") for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {"registry.example.com/meterstream/meterstream:0.1.0"}
    assert _deployment(production, "sink")["spec"]["replicas"] == 3
    assert production.get("HorizontalPodAutoscaler", "meterstream-processor")["spec"]["minReplicas"] == 4
    for component in ("processor", "gateway"):
        before, after = _container(base, component), _container(production, component)
        assert after["resources"] != before["resources"], component
        # The patch merged into the container: probes, env and mounts are still there.
        assert {k: v for k, v in after.items() if k not in ("resources", "args", "image")} == {
            k: v for k, v in before.items() if k not in ("resources", "args", "image")
        }
    assert parse_cli(_container(production, "gateway")["args"]).params["workers"] == 2
    sink_rate = float(production.get("ConfigMap", "meterstream-config")["data"]["METERSTREAM_STRIPE_RATE"])
    assert sink_rate * _deployment(production, "sink")["spec"]["replicas"] < 1000  # v1 meter events, live mode
