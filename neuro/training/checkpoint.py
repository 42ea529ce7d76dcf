"""Checkpoints: a killed run resumes to the same weight bits.

A checkpoint is two files in the run folder, each written atomically: ``checkpoint.safetensors``
(the weights, the engine's state -- Adam moments, step counters that also key the stochastic
rounding, quire contents -- and the driver's own tensors, e.g. a closed loop's neuron state and
traces) and ``checkpoint.json`` (the position in the run, the history so far, the run's settings, the
driver's JSON state, and the sha256 of the tensor file, so a mismatched pair is refused).  Nothing
else is needed: inputs and shuffles come from counter-based streams keyed by (seed, epoch, sample),
and the learning-rate schedule from the step count.

The loop writes one every ``every`` global batches and at the end of every epoch (after its
evaluation); ``every = 0``: at epoch ends only.  Resuming continues from the next batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path
from typing import NamedTuple

import torch

from neuro.engine.state import flatten_state_dict, unflatten_state_dict
from neuro.training.outputs import atomic_write

__all__ = ["CHECKPOINT", "CHECKPOINT_META", "Checkpointer", "Position", "flatten_named", "restore_named"]

CHECKPOINT = "checkpoint.safetensors"
CHECKPOINT_META = "checkpoint.json"
#: Test hook, ``"N"`` or ``"N:INT"``: the process sends itself SIGKILL (or the named signal) right
#: after writing its N-th checkpoint -- a kill at a known point of the run.
SIGNAL_AFTER = "NEURO_SIGNAL_AFTER_CHECKPOINTS"


class Position(NamedTuple):
    """Where a run stands: the next global batch ``batch`` of ``epoch``, ``done`` engine steps so far,
    and the epoch's running loss / correct / seen counts."""

    epoch: int = 0
    batch: int = 0
    done: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0


def flatten_named(prefix: str, value) -> dict[str, torch.Tensor]:
    """The tensors of a (nested) NamedTuple of tensors (None fields left out), keyed ``prefix.field...``."""
    if value is None:
        return {}
    if isinstance(value, torch.Tensor):
        return {prefix: value.detach().cpu().contiguous()}
    out: dict[str, torch.Tensor] = {}
    for name, item in value._asdict().items():
        out.update(flatten_named(f"{prefix}.{name}", item))
    return out


def restore_named(template, prefix: str, tensors: dict[str, torch.Tensor]):
    """A value shaped like ``template`` (a nested NamedTuple of tensors) from :func:`flatten_named`'s
    tensors (dtype and device of the template's; None fields stay None)."""
    if template is None:
        return None
    if isinstance(template, torch.Tensor):
        return tensors[prefix].to(dtype=template.dtype, device=template.device)
    return type(template)(**{name: restore_named(item, f"{prefix}.{name}", tensors)
                             for name, item in template._asdict().items()})


class Checkpointer:
    """Writes and reads the checkpoints of the run folder ``out`` (see the module docstring)."""

    def __init__(self, out: Path, settings: dict, every: int = 50) -> None:
        if every < 0:
            raise ValueError(f"checkpoint_every must be >= 0 batches (0: at epoch ends only), got {every}")
        self.out, self.settings, self.every, self.written = Path(out), settings, int(every), 0

    def due(self, batch: int) -> bool:
        """Whether to write after global batch ``batch`` (0-based) of an epoch."""
        return self.every > 0 and (batch + 1) % self.every == 0

    def save(self, position: Position, history: dict, driver, engine) -> None:
        tensors = {f"weights.{name}": w.detach().cpu().contiguous() for name, w in driver.weights.items()}
        engine_tensors, engine_meta = flatten_state_dict(engine.state_dict())
        tensors.update({f"engine.{k}": v for k, v in engine_tensors.items()})
        driver_tensors, driver_meta = driver.state_dict()
        tensors.update({f"driver.{k}": v for k, v in driver_tensors.items()})
        from safetensors.torch import save

        data = save(tensors)
        atomic_write(self.out / CHECKPOINT, data)
        meta = {"settings": self.settings, "position": position._asdict(), "history": history,
                "engine": engine_meta, "driver": driver_meta,
                "tensors_sha256": hashlib.sha256(data).hexdigest()}
        atomic_write(self.out / CHECKPOINT_META, (json.dumps(meta, indent=1) + "\n").encode())
        self.written += 1
        hook = os.environ.get(SIGNAL_AFTER)
        if hook:
            count, _, name = hook.partition(":")
            if self.written == int(count):
                os.kill(os.getpid(), getattr(signal, f"SIG{name or 'KILL'}"))

    @staticmethod
    def exists(out: Path) -> bool:
        return (Path(out) / CHECKPOINT_META).exists()

    @staticmethod
    def saved_settings(out: Path) -> dict:
        """The settings a run folder's checkpoint was written with ({} when it has none)."""
        try:
            return json.loads((Path(out) / CHECKPOINT_META).read_text())["settings"]
        except (OSError, ValueError, KeyError):
            return {}

    def remove(self) -> None:
        """Delete the checkpoint (the run finished and wrote its outputs)."""
        for name in (CHECKPOINT_META, CHECKPOINT):
            (self.out / name).unlink(missing_ok=True)

    def load(self, driver, engine) -> tuple[Position, dict]:
        """Restore the weights, the engine and the driver from ``out``'s checkpoint; return the
        position to continue from and the history so far.  ValueError when the checkpoint does not
        belong to this run (settings differ) or its two files do not match."""
        from safetensors.torch import load

        meta_path = self.out / CHECKPOINT_META
        try:
            meta = json.loads(meta_path.read_text())
            data = (self.out / CHECKPOINT).read_bytes()
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{self.out}: no readable checkpoint ({err}); run without --resume") from None
        if hashlib.sha256(data).hexdigest() != meta.get("tensors_sha256"):
            raise ValueError(f"{self.out / CHECKPOINT} does not match {meta_path} (a write was cut "
                             "short or a file was replaced); run without --resume to start again")
        saved = meta["settings"]
        differ = {k: (saved.get(k), v) for k, v in self.settings.items() if saved.get(k) != v}
        if differ:
            shown = ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in differ.items())
            raise ValueError(f"{self.out}: the checkpoint is of another run ({shown}); resume with the "
                             "same model file and options, or choose another --out")
        tensors = load(data)
        with torch.no_grad():
            for name, w in driver.weights.items():
                w.copy_(tensors[f"weights.{name}"])
        engine.load_state_dict(unflatten_state_dict(
            {k[len("engine."):]: v for k, v in tensors.items() if k.startswith("engine.")}, meta["engine"]))
        driver.load_state_dict({k[len("driver."):]: v for k, v in tensors.items() if k.startswith("driver.")},
                               meta["driver"])
        return Position(**meta["position"]), meta["history"]
