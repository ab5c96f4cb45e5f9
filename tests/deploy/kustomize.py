"""Build kustomizations with the real kustomize: ``kubectl kustomize`` (kustomize is built into kubectl,
which these machines have). Tests that build a kustomization skip, with the reason, where kubectl is
absent; nothing here re-implements kustomize's merging."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

__all__ = ["Built", "build", "load_docs", "resource_id"]

Resource = dict[str, Any]


class Built:
    """The output of one kustomization, plus the files its ``resources`` name directly (so a test can check
    that every committed manifest is part of the build)."""

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


def kubectl() -> str:
    """The kubectl binary, or a skip naming why the manifests cannot be built."""
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` builds deploy/'s kustomizations")
    return found


def _listed_files(directory: Path) -> list[Path]:
    """The kustomization file and every resource file it lists, recursively through listed directories."""
    kfile = directory / "kustomization.yaml"
    files = [kfile]
    for entry in yaml.safe_load(kfile.read_text()).get("resources", []):
        path = (directory / entry).resolve()
        files.extend(_listed_files(path) if path.is_dir() else [path])
    return files


@functools.cache
def _render(directory: Path) -> str:
    done = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return done.stdout


def build(directory: Path) -> Built:
    """``kubectl kustomize DIRECTORY``, parsed; a build error fails the test with kustomize's message."""
    directory = directory.resolve()
    assert (directory / "kustomization.yaml").is_file(), f"{directory} has no kustomization.yaml"
    resources = [doc for doc in yaml.safe_load_all(_render(directory)) if doc is not None]
    return Built(resources, _listed_files(directory))
