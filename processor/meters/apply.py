"""``meterstream meters apply FILE``: make the registry match a declarative list of meters.

FILE is a JSON or YAML list of Stripe meter create params, each optionally with ``status: active|inactive``.
Meters are matched by ``event_name`` (one event_name, one meter), so applying a file twice changes
nothing. What can change is what Stripe lets change: ``display_name`` (rename) and ``status``
(deactivate / reactivate). A difference in any other setting is an error for that entry (meters are
immutable: the fix is a meter with a new event_name), reported with what differs; the other entries are
still applied and the command exits 1 at the end.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from processor.errors import InvalidRequestError
from processor.meters.model import CreateParams, Meter
from processor.meters.registry import MeterRegistry
from processor.meters.validation import validate_create_params

__all__ = ["Action", "Change", "apply_entries", "apply_file", "immutable_differences", "load_file"]

Action = Literal["create", "rename", "deactivate", "reactivate", "unchanged", "error"]


@dataclass(frozen=True)
class Change:
    """One thing ``apply`` did (or, with ``--dry-run``, would do) for the entry at ``index`` of the file."""

    index: int
    event_name: str | None
    action: Action
    meter_id: str | None = None
    detail: str = ""

    def line(self) -> str:
        who = self.event_name if self.event_name is not None else f"entry {self.index}"
        text = f"{self.action:<10} {who}"
        if self.meter_id:
            text += f" ({self.meter_id})"
        if self.detail:
            text += f": {self.detail}"
        return text


def load_file(path: str | Path) -> list[Any]:
    """The entries of a JSON (``.json``) or YAML (anything else) file, which must hold a list."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"cannot read {path}: {exc}") from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise InvalidRequestError(f"{path} is not valid {kind}: {exc}") from exc
    if data is None:
        return []
    if not isinstance(data, list):
        raise InvalidRequestError(
            f"{path} must hold a list of meters (Stripe create params), got {type(data).__name__}"
        )
    return data


_IMMUTABLE: tuple[tuple[str, str, str | None], ...] = (
    ("default_aggregation[formula]", "default_aggregation", "formula"),
    ("event_time_window", "event_time_window", None),
    ("customer_mapping[event_payload_key]", "customer_mapping", "event_payload_key"),
    ("value_settings[event_payload_key]", "value_settings", "event_payload_key"),
)


def immutable_differences(meter: Meter, wanted: CreateParams) -> list[str]:
    """``param: have → want`` for every create-time setting in which ``wanted`` differs from ``meter``."""
    have: Mapping[str, Any] = meter.create_params()
    want: Mapping[str, Any] = wanted
    out = []
    for label, outer, inner in _IMMUTABLE:
        a = have[outer] if inner is None else have[outer][inner]
        b = want[outer] if inner is None else want[outer][inner]
        if a != b:
            out.append(f"{label} is {json.dumps(a)} on the meter, {json.dumps(b)} in the file")
    return out


def apply_file(registry: MeterRegistry, path: str | Path, *, dry_run: bool = False) -> list[Change]:
    return apply_entries(registry, load_file(path), dry_run=dry_run)


def apply_entries(registry: MeterRegistry, entries: list[Any], *, dry_run: bool = False) -> list[Change]:
    """Apply each entry in order; per-entry problems become ``error`` changes, infrastructure failures
    (Kafka, Redis) raise, since every later entry would fail the same way."""
    changes: list[Change] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        try:
            changes.extend(_apply_one(registry, index, entry, seen, dry_run))
        except InvalidRequestError as exc:
            name = entry.get("event_name") if isinstance(entry, Mapping) else None
            changes.append(Change(index, name if isinstance(name, str) else None, "error", detail=exc.message))
    return changes


def _apply_one(registry: MeterRegistry, index: int, entry: object, seen: dict[str, int], dry_run: bool) -> list[Change]:
    if not isinstance(entry, Mapping):
        raise InvalidRequestError(f"entry {index} must be an object of meter create params, got {type(entry).__name__}")
    params = dict(entry)
    status = params.pop("status", None)
    if status not in (None, "active", "inactive"):
        raise InvalidRequestError(f"Invalid status: must be one of active or inactive, got {status!r}", param="status")
    wanted = validate_create_params(params)
    name = wanted["event_name"]
    if name in seen:
        raise InvalidRequestError(f"event_name '{name}' appears twice in the file (entries {seen[name]} and {index})")
    seen[name] = index

    existing = registry.find_by_event_name(name)
    if existing is None:
        if dry_run:
            out = [Change(index, name, "create", detail=f"formula {wanted['default_aggregation']['formula']}")]
            if status == "inactive":
                out.append(Change(index, name, "deactivate"))
            return out
        meter = registry.create(params)
        out = [Change(index, name, "create", meter.id)]
        if status == "inactive":
            registry.deactivate(meter.id)
            out.append(Change(index, name, "deactivate", meter.id))
        return out

    differences = immutable_differences(existing, wanted)
    if differences:
        return [
            Change(
                index,
                name,
                "error",
                existing.id,
                "meters are immutable except display_name and status; "
                + "; ".join(differences)
                + " (use a new event_name for a meter with different settings)",
            )
        ]
    out = []
    if existing.display_name != wanted["display_name"]:
        if not dry_run:
            registry.rename(existing.id, wanted["display_name"])
        out.append(
            Change(index, name, "rename", existing.id, f"{existing.display_name!r} -> {wanted['display_name']!r}")
        )
    if status == "inactive" and existing.active:
        if not dry_run:
            registry.deactivate(existing.id)
        out.append(Change(index, name, "deactivate", existing.id))
    elif status == "active" and not existing.active:
        if not dry_run:
            registry.reactivate(existing.id)
        out.append(Change(index, name, "reactivate", existing.id))
    return out or [Change(index, name, "unchanged", existing.id)]
