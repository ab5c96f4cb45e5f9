"""A small offline stand-in for ``kustomize build``, for the fields deploy/ uses.

kustomize cannot be installed here (no internet beyond package registries), so the tests build each
kustomization themselves: resources (files and directories), ``namespace``, ``labels`` (metadata only,
``includeSelectors: false``), ``images``, ``replicas``, strategic-merge ``patches`` given by ``path``, and
``configMapGenerator`` from ``files`` (with ``options.labels``; only with
``generatorOptions: {disableNameSuffixHash: true}``, so names stay what the manifests say).
Anything else in a kustomization is refused, so a field this builder does not understand cannot be
silently ignored by the tests. Strategic merge is approximated the way kustomize merges the fields we
patch: maps merge recursively, lists of named maps (containers, env, ports, volumes) merge by ``name``,
other lists are replaced.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

__all__ = ["KNOWN_FIELDS", "Built", "build", "load_docs", "merge", "resource_id"]

KNOWN_FIELDS = {
    "apiVersion",
    "kind",
    "namespace",
    "labels",
    "resources",
    "images",
    "replicas",
    "patches",
    "configMapGenerator",
    "generatorOptions",
}

Resource = dict[str, Any]


class Built:
    """The output of one kustomization, plus what it referenced (for the reference checks)."""

    def __init__(self, resources: list[Resource], files: list[Path]) -> None:
        self.resources = resources
        self.files = files

    def get(self, kind: str, name: str) -> Resource:
        found = [r for r in self.resources if resource_id(r) == (kind, name)]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} resources"
        return found[0]

    def of_kind(self, kind: str) -> list[Resource]:
        return [r for r in self.resources if r["kind"] == kind]


def resource_id(resource: Resource) -> tuple[str, str]:
    return resource["kind"], resource["metadata"]["name"]


def load_docs(path: Path) -> list[Resource]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge of ``patch`` into ``base`` (see the module docstring); returns a new value."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        merged = [copy.deepcopy(item) for item in base]
        index = {item["name"]: i for i, item in enumerate(merged)}
        for item in patch:
            if item["name"] in index:
                merged[index[item["name"]]] = merge(merged[index[item["name"]]], item)
            else:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(patch)


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(item, dict) and "name" in item for item in items)


def _containers(resource: Resource) -> list[dict[str, Any]]:
    spec = resource.get("spec", {}).get("template", {}).get("spec", {})
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def _generated_config_maps(directory: Path, k: dict[str, Any]) -> list[Resource]:
    generators = k.get("configMapGenerator", [])
    if not generators:
        return []
    assert k.get("generatorOptions") == {"disableNameSuffixHash": True}, "only disableNameSuffixHash: true"
    out = []
    for entry in generators:
        assert set(entry) <= {"name", "files", "options"}, f"unsupported configMapGenerator fields: {entry}"
        assert set(entry.get("options", {})) <= {"labels"}, f"unsupported options: {entry}"
        data = {}
        for name in entry["files"]:
            path = directory / name
            assert "=" not in name and path.is_file(), f"{directory}: generator file {name} does not exist"
            data[path.name] = path.read_text()
        metadata: dict[str, Any] = {"name": entry["name"]}
        if entry.get("options", {}).get("labels"):
            metadata["labels"] = dict(entry["options"]["labels"])
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data})
    return out


def build(directory: Path) -> Built:
    """Build the kustomization in ``directory``; assertion errors name what is wrong."""
    kfile = directory / "kustomization.yaml"
    assert kfile.is_file(), f"{directory} has no kustomization.yaml"
    k = yaml.safe_load(kfile.read_text())
    assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and k["kind"] == "Kustomization", kfile
    unknown = set(k) - KNOWN_FIELDS
    assert not unknown, f"{kfile}: fields this test builder does not apply: {sorted(unknown)}"

    resources: list[Resource] = []
    files = [kfile]
    for entry in k.get("resources", []):
        path = (directory / entry).resolve()
        assert path.exists(), f"{kfile}: resource {entry} does not exist"
        if path.is_dir():
            sub = build(path)
            resources.extend(sub.resources)
            files.extend(sub.files)
        else:
            resources.extend(load_docs(path))
            files.append(path)
    resources.extend(_generated_config_maps(directory, k))
    ids = [resource_id(r) for r in resources]
    assert len(ids) == len(set(ids)), f"{kfile}: duplicate resources"

    for entry in k.get("patches", []):
        assert set(entry) == {"path"}, f"{kfile}: only file patches are supported, got {entry}"
        path = directory / entry["path"]
        assert path.is_file(), f"{kfile}: patch {entry['path']} does not exist"
        files.append(path)
        for patch in load_docs(path):
            target = resource_id(patch)
            assert target in ids, f"{path.name}: patches {target}, which the resources do not define"
            i = ids.index(target)
            assert resources[i]["apiVersion"] == patch["apiVersion"], f"{path.name}: apiVersion of {target}"
            resources[i] = merge(resources[i], patch)

    for entry in k.get("labels", []):
        assert entry.get("includeSelectors", False) is False, "selector labels are immutable: keep them explicit"
        for resource in resources:
            resource.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])

    for entry in k.get("replicas", []):
        target = ("Deployment", entry["name"])
        assert target in ids, f"{kfile}: replicas for unknown {target}"
        resources[ids.index(target)]["spec"]["replicas"] = entry["count"]

    for entry in k.get("images", []):
        used = False
        for resource in resources:
            for container in _containers(resource):
                name, _, _ = container["image"].partition(":")
                if name == entry["name"]:
                    used = True
                    container["image"] = f"{entry.get('newName', name)}:{entry['newTag']}"
        assert used, f"{kfile}: image {entry['name']} is used by no container"

    if "namespace" in k:
        for resource in resources:
            resource["metadata"]["namespace"] = k["namespace"]
    return Built(resources, files)
