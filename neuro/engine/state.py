"""The engine's state dict: what a checkpoint holds to resume bit-exactly, and its safetensors form.

``{"version", "seed", "state": {index: {"step", "touched", "quire_limbs", "quire_offset",
"quire_nar", buffers...}}, "param_groups": [{..., "params": [indices], "format": {...},
"type": {...}}]}``: tensors and JSON-able values only (no pickle).
"""

from __future__ import annotations

from typing import Any

import torch

from neuro.engine.params import ParamType
from neuro.engine.slot import Slot
from neuro.numerics import Quire
from neuro.numerics.formats import storage_from_json, storage_name, storage_to_json

__all__ = [
    "STATE_VERSION",
    "slot_state",
    "group_state",
    "check_state",
    "restore_group",
    "restore_slot",
    "flatten_state_dict",
    "unflatten_state_dict",
]

STATE_VERSION = 1
_OPTIONS = ("lr", "rounding", "momentum", "adam", "eps")  # restored with "betas"


def slot_state(slot: Slot) -> dict[str, Any]:
    """One parameter's entry: step counter, touched flag, quire limbs/offset/NaR and buffers (copies)."""
    q = slot.quire
    entry: dict[str, Any] = {
        "step": slot.step,
        "touched": slot.touched,
        "quire_limbs": q.limbs.clone(),
        "quire_offset": q.offset,
        "quire_nar": q.nar.clone(),
    }
    for k, b in slot.buffers.items():
        entry[k] = b.clone()
    return entry


def group_state(g: dict, indices: list[int]) -> dict[str, Any]:
    """A parameter group's options as JSON-able values, its parameters as engine ``indices``."""
    return {
        "params": indices,
        "names": list(g["names"]),
        "format": storage_to_json(g["format"]),
        "lr": float(g["lr"]),
        "rounding": g["rounding"],
        "momentum": float(g["momentum"]),
        "adam": bool(g["adam"]),
        "betas": list(g["betas"]),
        "eps": float(g["eps"]),
        "type": g["type"].to_json(),
    }


def check_state(state_dict: dict, param_groups: list[dict]) -> None:
    """Raise ValueError unless ``state_dict`` was written by an engine with the same groups (sizes,
    formats and types) as ``param_groups``."""
    if state_dict.get("version") != STATE_VERSION:
        raise ValueError(
            f"UpdateEngine.load_state_dict: unsupported state version {state_dict.get('version')}"
        )
    groups = state_dict["param_groups"]
    if len(groups) != len(param_groups):
        raise ValueError(
            f"UpdateEngine.load_state_dict: {len(groups)} groups saved, engine has "
            f"{len(param_groups)}"
        )
    for gi, (saved, g) in enumerate(zip(groups, param_groups)):
        if len(saved["params"]) != len(g["params"]):
            raise ValueError(
                f"UpdateEngine.load_state_dict: group {gi} has {len(saved['params'])} saved "
                f"params, engine has {len(g['params'])}"
            )
        if (
            storage_from_json(saved["format"]) != g["format"]
            or ParamType.from_json(saved["type"]) != g["type"]
        ):
            raise ValueError(
                f"UpdateEngine.load_state_dict: group {gi} was saved with format "
                f"{saved['format']} and type {saved['type']}, engine has "
                f"{storage_name(g['format'])} and {g['type']}"
            )


def restore_group(saved: dict, g: dict) -> None:
    """Restore a group's options (lr, rounding, momentum, adam, eps, betas) from its saved entry."""
    for key in _OPTIONS:
        g[key] = saved[key]
    g["betas"] = tuple(saved["betas"])


def restore_slot(slot: Slot, state: dict, index: int) -> None:
    """Restore one parameter from ``state`` (the state dict's ``"state"``, keys ints or strings)."""
    entry = state[index] if index in state else state[str(index)]
    dev = slot.param.device
    limbs = entry["quire_limbs"].to(device=dev, dtype=torch.int64)
    if tuple(limbs.shape[:-1]) != tuple(slot.qshape):
        raise ValueError(
            f"{slot.name}: saved quire has shape {tuple(limbs.shape[:-1])}, expected {slot.qshape}"
        )
    slot.quire = Quire.from_limbs(
        slot.group["format"],
        limbs,
        int(entry["quire_offset"]),
        entry["quire_nar"].to(device=dev, dtype=torch.bool),
    )
    slot.step = int(entry["step"])
    slot.forget_events()
    slot.touched = slot.dense = bool(entry["touched"])
    slot.buffers = {
        k: v.clone().to(dev)
        for k, v in entry.items()
        if isinstance(v, torch.Tensor) and not k.startswith("quire_")
    }


def flatten_state_dict(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split a state dict into ``({"state.<i>.<key>": tensor}, JSON-able metadata)`` (for safetensors)."""
    tensors: dict[str, torch.Tensor] = {}
    meta_state: dict[str, dict] = {}
    for idx, entry in state_dict["state"].items():
        m: dict[str, Any] = {}
        for k, v in entry.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{idx}.{k}"] = v.contiguous()
            else:
                m[k] = v
        meta_state[str(idx)] = m
    meta = {k: v for k, v in state_dict.items() if k != "state"}
    meta["state"] = meta_state
    return tensors, meta


def unflatten_state_dict(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Inverse of :func:`flatten_state_dict`."""
    state: dict[int, dict] = {int(i): dict(m) for i, m in meta["state"].items()}
    for name, t in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = t
    out = {k: v for k, v in meta.items() if k != "state"}
    out["state"] = state
    return out
