"""Certificates: checks of a model graph and its stored weights, issued only when all pass.

A certificate says that a set of weights (a safetensors file) fits the model graph it claims to
belong to.  :func:`certify` runs these checks, in this order:

``units``
    Every time constant, refractory period and delay is a positive (or zero) time in seconds that
    survives the model file round trip (``loads_model(dump_model(g))`` has the same canonical hash),
    every delay and refractory period is a whole number of steps, and every time constant is at
    least one step (forward Euler with ``dt / tau > 1`` overshoots).
``shapes``
    Every projection has a weight tensor of ``graph.weight_shape`` (or a full ``2**n`` blade axis
    for multivector weights), no extra tensors, all values finite.
``grades``
    No weight holds an off-grade component: with a full blade axis, coefficients outside the
    projection's grades are exactly 0; with the packed layout of ``graph.weight_shape`` the axis
    only has room for the declared grades.  Rotor-typed parameters would be checked for
    ``R R~ = 1``; the model-file format has no rotor-typed projection yet, so the check reports
    that it does not apply.
``representable``
    Every weight is exactly a value of its projection's declared storage format:
    ``fmt.quantize(w) == w`` for posit and b-posit formats, ``float(float32(w)) == w`` for float32.
``bounds`` / ``sign``
    Weights lie inside the projection's bounds and obey its sign (Dale's law).
``memory``
    The inference memory plan of :mod:`neuro.training.plan` (weights in their storage formats, neuron
    states, readout and buffers for a batch) is within the budget (see :func:`memory_plan`).

A :class:`Certificate` is JSON: graph hash, weights sha256, each check with its result and detail,
the tool and its version, the time of issue.  :func:`certify` raises :class:`CertificationError`
naming the first failing check (and listing all failures) instead of issuing one.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from neuro import __version__
from neuro.model.graph import ModelGraph

__all__ = [
    "CHECKS",
    "Certificate",
    "CertificationError",
    "certify",
    "certify_files",
    "certify_run",
    "check_certificate",
    "memory_plan",
    "run_checks",
    "DEFAULT_MEMORY_BUDGET",
    "cli_certify",
    "load_weights",
    "tensors_digest",
    "weights_from_bytes",
]

#: The checks, in the order they run.
CHECKS: tuple[str, ...] = ("units", "shapes", "grades", "representable", "bounds", "sign", "memory")
#: Default memory budget of the inference plan, bytes (1 GiB).
DEFAULT_MEMORY_BUDGET = 1 << 30
CERTIFICATE_TYPE = "https://neuro.dev/certificate/v1"


class CertificationError(ValueError):
    """A certificate was refused: ``check`` names the first failing check, ``failures`` all of them
    as ``(check, detail)`` pairs."""

    def __init__(self, failures: list[tuple[str, str]]) -> None:
        self.failures = failures
        self.check = failures[0][0]
        lines = [f"certificate refused: check {name!r} failed: {detail}" for name, detail in failures]
        super().__init__("\n".join(lines))


@dataclass
class Certificate:
    """An issued certificate (every check passed).

    Attributes:
        model: model name.
        graph_hash: ``ModelGraph.canonical_hash()`` of the certified graph.
        weights_sha256: sha256 over the weight tensors (name, dtype, shape, bytes; sorted by name);
            independent of the safetensors file's layout, so it names the values themselves.
        checks: one dict per check: ``{"name", "passed", "detail"}``.
        memory_plan: the plan the ``memory`` check used.
        tool, tool_version: ``"neuro"`` and :data:`neuro.__version__`.
        issued: UTC time of issue, ISO 8601.
    """

    model: str
    graph_hash: str
    weights_sha256: str
    checks: list[dict[str, Any]]
    memory_plan: dict[str, Any]
    tool: str = "neuro"
    tool_version: str = __version__
    issued: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    type: str = CERTIFICATE_TYPE

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "type": self.type, "model": self.model, "graph_hash": self.graph_hash,
            "weights_sha256": self.weights_sha256, "checks": self.checks, "memory_plan": self.memory_plan,
            "tool": self.tool, "tool_version": self.tool_version, "issued": self.issued,
        }

    def to_json(self) -> str:
        """Indented JSON text (sorted keys)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Certificate:
        """Rebuild from :meth:`to_dict` output; raises ValueError if a field is missing."""
        try:
            return cls(model=data["model"], graph_hash=data["graph_hash"],
                       weights_sha256=data["weights_sha256"], checks=list(data["checks"]),
                       memory_plan=dict(data["memory_plan"]), tool=data["tool"],
                       tool_version=data["tool_version"], issued=data["issued"], type=data["type"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a neuro certificate: missing {exc}") from None

    @property
    def passed(self) -> bool:
        """True if every check passed (always, for an issued certificate)."""
        return all(c["passed"] for c in self.checks)


def tensors_digest(weights: Mapping[str, torch.Tensor]) -> str:
    """sha256 over ``weights`` sorted by name: name, dtype, shape and raw bytes of each tensor."""
    h = hashlib.sha256()
    for name in sorted(weights):
        w = weights[name].detach().cpu().contiguous()
        h.update(f"{name}\0{str(w.dtype)}\0{tuple(w.shape)}\0".encode())
        h.update(w.numpy().tobytes() if w.numel() else b"")
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# Memory plan
# --------------------------------------------------------------------------------------------------


def memory_plan(graph: ModelGraph, *, batch: int = 1) -> dict[str, Any]:
    """The inference memory plan of ``graph`` for ``batch`` samples, from :mod:`neuro.training.plan`.

    Returns a dict with ``weights_bytes`` (weights in their storage formats), ``state_bytes``
    (neuron states and readout), ``delay_bytes`` (input and step buffers), ``total_bytes`` (the
    whole inference plan), ``components``, ``batch``, ``steps`` and ``source``.
    """
    from neuro.training.plan import memory_plan as plan_of

    plan = plan_of(graph, batch=batch)
    parts = plan.inference
    weights = parts.get("weights", 0)
    state = parts.get("neuron_states", 0) + parts.get("readout", 0)
    total = plan.inference_bytes
    return {
        "weights_bytes": int(weights), "state_bytes": int(state),
        "delay_bytes": int(total - weights - state), "total_bytes": int(total),
        "components": {k: int(v) for k, v in parts.items()}, "batch": batch, "steps": plan.steps,
        "source": "neuro.training.plan (inference)",
    }


# --------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------


def _check_units(graph: ModelGraph) -> tuple[bool, str]:
    from neuro.model.spec import dump_model, loads_model

    problems = []
    dt = graph.dt
    for pop in graph.populations.values():
        for key in ("tau_mem", "tau_syn", "tau_adapt"):
            tau = getattr(pop, key)
            if tau is None:
                continue
            if not (math.isfinite(tau) and tau > 0):
                problems.append(f"populations.{pop.name}.{key} = {tau!r} s is not a positive time")
            elif tau < dt * (1 - 1e-12):
                problems.append(f"populations.{pop.name}.{key} = {tau!r} s is shorter than dt = {dt!r} s "
                                "(forward Euler would overshoot)")
        if pop.refractory is not None and abs(pop.refractory / dt - round(pop.refractory / dt)) > 1e-9:
            problems.append(f"populations.{pop.name}.refractory is not a whole number of steps")
    for name, proj in graph.projections.items():
        if abs(proj.delay / dt - graph.delay_steps(name)) > 1e-9 * max(1.0, proj.delay / dt):
            problems.append(f"projections.{name}.delay = {proj.delay!r} s is not a whole number of steps")
    try:
        again = loads_model(dump_model(graph), source=f"<{graph.name} resolved>")
        if again.canonical_hash() != graph.canonical_hash():
            problems.append("the model file round trip (dump_model -> loads_model) changes the graph")
    except ValueError as exc:
        problems.append(f"the resolved model file does not load back: {exc}")
    if problems:
        return False, "; ".join(problems)
    return True, (f"times in seconds, dt = {dt!r} s, {graph.steps} steps; every time constant >= dt; "
                  "delays whole steps; model file round trip preserves the canonical hash")


def _full_blades(graph: ModelGraph, name: str) -> int:
    return 2 ** sum(graph.projections[name].algebra)


def _check_shapes(graph: ModelGraph, weights: Mapping[str, torch.Tensor]) -> tuple[bool, str]:
    problems = []
    for name in graph.projections:
        if name not in weights:
            problems.append(f"no weight tensor for projection {name!r}")
            continue
        w = weights[name]
        want = graph.weight_shape(name)
        proj = graph.projections[name]
        multivector = proj.algebra != (0, 0, 0) or proj.grades != (0,)
        full = want[:-1] + (_full_blades(graph, name),) if multivector else None
        if tuple(w.shape) != want and (full is None or tuple(w.shape) != full):
            problems.append(f"{name}: shape {tuple(w.shape)}, expected {want}")
        elif not bool(torch.isfinite(w).all()):
            problems.append(f"{name}: {int((~torch.isfinite(w)).sum())} non-finite values")
    extra = sorted(set(weights) - set(graph.projections))
    if extra:
        problems.append(f"tensors for unknown projections: {', '.join(extra)}")
    if problems:
        return False, "; ".join(problems)
    return True, f"{len(graph.projections)} weight tensors of the declared shapes, all finite"


def _check_grades(graph: ModelGraph, weights: Mapping[str, torch.Tensor]) -> tuple[bool, str]:
    from neuro.algebra import Algebra

    problems, notes = [], []
    for name, proj in graph.projections.items():
        w = weights[name]
        if proj.algebra == (0, 0, 0):
            notes.append(f"{name}: scalar (grade 0)")
            continue
        if tuple(w.shape) == graph.weight_shape(name):
            notes.append(f"{name}: packed grades {list(proj.grades)}")
            continue
        mask = Algebra(*proj.algebra).grade_mask(list(proj.grades))
        off = w[..., ~mask]
        if bool((off != 0).any()):
            problems.append(f"{name}: {int((off != 0).sum())} off-grade coefficients "
                            f"(max |c| = {float(off.abs().max()):.3g}) outside grades {list(proj.grades)}")
        else:
            notes.append(f"{name}: off-grade coefficients exactly 0")
    if problems:
        return False, "; ".join(problems)
    return True, "; ".join(notes) + "; rotor unit norm: not applicable (no rotor-typed projection)"


def _check_representable(graph: ModelGraph, weights: Mapping[str, torch.Tensor]) -> tuple[bool, str]:
    from neuro.numerics import NAMED_FORMATS

    problems, notes = [], []
    for name, proj in graph.projections.items():
        w = weights[name].detach().to(torch.float64)
        if proj.format == "float64":
            ok = weights[name].dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16)
            bad = 0 if ok else w.numel()
        elif proj.format == "float32":
            bad = int((w.to(torch.float32).to(torch.float64) != w).sum())
        else:
            fmt = NAMED_FORMATS[proj.format]
            bad = int((fmt.quantize(w) != w).sum())
        if bad:
            problems.append(f"{name}: {bad} of {w.numel()} weights are not {proj.format} values")
        else:
            notes.append(f"{name}: {proj.format}")
    if problems:
        return False, "; ".join(problems)
    return True, "every weight is exactly a value of its declared format (" + ", ".join(notes) + ")"


def _check_bounds(graph: ModelGraph, weights: Mapping[str, torch.Tensor]) -> tuple[bool, str]:
    problems, n = [], 0
    for name, proj in graph.projections.items():
        if proj.bounds is None:
            continue
        n += 1
        lo, hi = proj.bounds
        w = weights[name]
        bad = int(((w < lo) | (w > hi)).sum())
        if bad:
            problems.append(f"{name}: {bad} weights outside [{lo!r}, {hi!r}] "
                            f"(range [{float(w.min())!r}, {float(w.max())!r}])")
    if problems:
        return False, "; ".join(problems)
    return True, f"{n} bounded projection(s) within bounds" if n else "no projection declares bounds"


def _check_sign(graph: ModelGraph, weights: Mapping[str, torch.Tensor]) -> tuple[bool, str]:
    problems, n = [], 0
    for name, proj in graph.projections.items():
        if proj.sign is None:
            continue
        n += 1
        w = weights[name]
        bad = int((w < 0).sum()) if proj.sign == "excitatory" else int((w > 0).sum())
        if bad:
            problems.append(f"{name}: {bad} weights of the wrong sign for {proj.sign}")
    if problems:
        return False, "; ".join(problems)
    return True, f"{n} signed projection(s) obey their sign" if n else "no projection declares a sign"


def _check_memory(plan: dict[str, Any], budget: int) -> tuple[bool, str]:
    total = plan["total_bytes"]
    detail = (f"{total} bytes (weights {plan['weights_bytes']}, state {plan['state_bytes']}, buffers "
              f"{plan['delay_bytes']}, batch {plan['batch']}) vs budget {budget} bytes; plan from "
              f"{plan['source']}")
    return total <= budget, detail


def run_checks(graph: ModelGraph, weights: Mapping[str, torch.Tensor], *,
               memory_budget: int = DEFAULT_MEMORY_BUDGET, batch: int = 1
               ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run every check of :data:`CHECKS`; returns ``(checks, memory plan)``, issuing nothing.

    ``checks`` is a list of ``{"name", "passed", "detail"}``.  A check that cannot run because an
    earlier one failed (``shapes``) is reported failed with the reason.
    """
    results: list[dict[str, Any]] = []

    def add(name: str, outcome: tuple[bool, str]) -> None:
        results.append({"name": name, "passed": bool(outcome[0]), "detail": outcome[1]})

    add("units", _check_units(graph))
    add("shapes", _check_shapes(graph, weights))
    plan = memory_plan(graph, batch=batch)
    if results[-1]["passed"]:
        add("grades", _check_grades(graph, weights))
        add("representable", _check_representable(graph, weights))
        add("bounds", _check_bounds(graph, weights))
        add("sign", _check_sign(graph, weights))
    else:
        for name in ("grades", "representable", "bounds", "sign"):
            add(name, (False, "not run: the weight tensors do not have the declared shapes"))
    add("memory", _check_memory(plan, memory_budget))
    return results, plan


def certify(graph: ModelGraph, weights: Mapping[str, torch.Tensor], *,
            memory_budget: int = DEFAULT_MEMORY_BUDGET, batch: int = 1) -> Certificate:
    """Check ``weights`` against ``graph`` and issue a :class:`Certificate`.

    Args:
        graph: the model graph.
        weights: projection name -> weight tensor (as stored: the safetensors file's tensors).
        memory_budget: bytes the inference memory plan may use.
        batch: batch size of the memory plan.
    Raises:
        CertificationError: if any check fails; ``.check`` names the first failing one.
    """
    checks, plan = run_checks(graph, weights, memory_budget=memory_budget, batch=batch)
    failures = [(c["name"], c["detail"]) for c in checks if not c["passed"]]
    if failures:
        raise CertificationError(failures)
    return Certificate(model=graph.name, graph_hash=graph.canonical_hash(),
                       weights_sha256=tensors_digest(weights), checks=checks, memory_plan=plan)


def weights_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    """The tensors of safetensors bytes (no pickle); ValueError if they are not a safetensors file."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return dict(load(data))
    except SafetensorError as exc:
        raise ValueError(f"not a safetensors file ({exc})") from None


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (no pickle); ValueError naming the file if it is not one."""
    try:
        return weights_from_bytes(Path(path).read_bytes())
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def certify_files(model_path: str | Path, weights_path: str | Path, **kwargs: Any) -> Certificate:
    """:func:`certify` a model file (TOML) and a weights file (safetensors)."""
    from neuro.model.spec import load_model

    return certify(load_model(model_path), load_weights(weights_path), **kwargs)


def certify_run(run_dir: str | Path, **kwargs: Any) -> Certificate:
    """:func:`certify` a complete run folder (its manifest and file hashes checked first, see
    :func:`neuro.training.outputs.read_run`); RunFolderError (a ValueError) if it is incomplete."""
    from neuro.training.outputs import read_run

    run = read_run(run_dir)
    return certify(run.graph, run.weights, **kwargs)


def check_certificate(cert: Mapping[str, Any] | Certificate, graph: ModelGraph,
                      weights: Mapping[str, torch.Tensor], **kwargs: Any) -> Certificate:
    """Verify that ``cert`` belongs to ``graph`` and ``weights`` and that its checks still pass.

    Re-runs every check (so a certificate cannot vouch for weights that fail them) and compares the
    graph hash and weights digest.  Returns the parsed certificate; raises CertificationError.
    """
    cert = cert if isinstance(cert, Certificate) else Certificate.from_dict(cert)
    failures = []
    if cert.type != CERTIFICATE_TYPE:
        failures.append(("certificate", f"type {cert.type!r}, expected {CERTIFICATE_TYPE!r}"))
    if not cert.passed:
        failures.append(("certificate", "the certificate records a failed check"))
    if cert.graph_hash != graph.canonical_hash():
        failures.append(("graph_hash", f"certificate is for graph {cert.graph_hash[:16]}..., the model file "
                         f"hashes to {graph.canonical_hash()[:16]}..."))
    if cert.weights_sha256 != tensors_digest(weights):
        failures.append(("weights_sha256", "the certificate was issued for other weights"))
    checks, _ = run_checks(graph, weights, **kwargs)
    failures += [(c["name"], c["detail"]) for c in checks if not c["passed"]]
    if failures:
        raise CertificationError(failures)
    return cert


def cli_certify(model: str, weights: str | None = None, *, out: str | None = None,
                memory_budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    """``neuro certify MODEL.toml WEIGHTS.safetensors | RUN_DIR [--out CERT.json] [--memory-budget BYTES]``.

    A run folder alone is certified through its manifest (:func:`certify_run`).  Prints the
    certificate (or writes it to ``out``) and returns 0; prints the failing checks to stderr and
    returns 1 when a check fails, 2 when the input cannot be used (unreadable file, incomplete run).
    """
    import sys

    try:
        if weights is None:
            if not Path(model).is_dir():
                raise ValueError(f"{model}: give a model file and its weights, or a run folder")
            cert = certify_run(model, memory_budget=memory_budget)
        else:
            cert = certify_files(model, weights, memory_budget=memory_budget)
    except CertificationError as exc:
        print(f"neuro certify: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"neuro certify: {exc}", file=sys.stderr)
        return 2
    if out:
        Path(out).write_text(cert.to_json())
        print(f"certificate for {cert.model} ({cert.graph_hash[:16]}...) -> {out}")
    else:
        print(cert.to_json(), end="")
    return 0
