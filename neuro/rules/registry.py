"""The rule registry: every learning rule declares itself here, once.

A rule is one file under ``neuro/rules/`` that calls :func:`register` with a :class:`Rule`:

* ``name`` -- the value of ``rule = "..."`` in a model file's projection;
* ``keys`` -- its model-file keys (``[projections.NAME.rule_params]``) with their kinds and defaults,
  and ``resolve``, an optional check across keys (raise :class:`RuleKeyError` naming the key); the
  model layer (:mod:`neuro.model.spec`) reads both, so a misspelt or ill-typed key is reported with
  the file, the key and the fix before anything runs;
* ``mode`` -- the training driver that runs it (:data:`neuro.training.MODES`: ``bptt``, ``eprop``,
  ``ottt``, ... for loss-based rules, ``local`` for rules that learn from spikes in a closed loop);
* ``build`` -- for local rules, how its parameters and state are made from the graph:
  ``build(graph, projection_name) -> object`` with ``reset(batch, n_pre, n_post)`` and
  ``interval(contributions, weight, z_pre, z_post, reward=None)`` (see :class:`LocalRule`);
* ``brian2`` -- its Brian2 counterpart (synapse equations for :mod:`neuro.crosscheck`), or None with
  ``brian2_note`` saying why and how it is checked instead;
* ``plan`` -- its memory-plan terms (bytes beyond weights, quires and neuron states), used by
  :mod:`neuro.training.plan`.

Every rule receives the engine through the :class:`~neuro.engine.Contributions` protocol
(``accumulate``, ``accumulate_outer``, ``accumulate_events``) and never writes a weight.  Rules know
no number formats: the engine decides how contributions are summed and rounded.

This module imports nothing heavy: the model layer reads the declarations without running a rule.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "Brian2Synapse",
    "KINDS",
    "LocalRule",
    "Rule",
    "RuleKeyError",
    "get",
    "names",
    "register",
    "rules_of_kind",
    "unregister",
]

#: ``loss``: trained by a loss through a training mode (BPTT and its memory-bounded variants,
#: online eligibility rules); ``local``: learns from pre/post activity in a closed loop (STDP
#: family); ``fixed``: the weights do not change.
KINDS = ("loss", "local", "fixed")

#: A model-file key: ``(kind, default, check)``.  Kinds: ``"time"`` (seconds; written "20 ms"),
#: ``"rate"`` (hertz), ``"number"``, ``"int"``, ``"choice"`` (check: the choices), ``"bool"``.
#: Checks for numbers: ``">0"``, ``">=0"`` or None.
Key = tuple[str, Any, Any]


class RuleKeyError(ValueError):
    """A rule's keys do not fit together; the model layer names the file and the table.

    Attributes: ``key`` (the offending key), ``expected`` (may hold ``{value}``: the model layer puts
    ``value``, an SI value of the key, there as a model file writes it), ``found`` (None: the value
    given), ``hint`` (how to fix it) and ``table`` (``"rule_params"``, or ``"projection"`` for a key
    of the projection itself, e.g. ``bounds``)."""

    def __init__(self, key: str, expected: str, found: str | None, hint: str | None = None,
                 table: str = "rule_params", value: Any = None) -> None:
        shown = expected.replace("{value}", repr(value))
        super().__init__(f"{key}: expected {shown}, found {found or 'another value'}"
                         + (f" ({hint})" if hint else ""))
        self.key, self.expected, self.found, self.hint = key, expected, found, hint
        self.table, self.value = table, value


@dataclass(frozen=True)
class Brian2Synapse:
    """A plastic synapse as Brian2 equations (text) and constants.

    Attributes:
        model, on_pre, on_post: Brian2 ``Synapses`` equations; ``on_pre`` adds ``w`` to the target's
            ``I`` (``I_post += w``).
        namespace: constants, SI floats; ``seconds`` names those that are times (Brian2 gets them
            with the unit second).
        reward: the synapse reads a dopamine signal ``d`` (eligibility ``c``; see
            :mod:`neuro.crosscheck.reference`).
    """

    model: str
    on_pre: str
    on_post: str
    namespace: Mapping[str, float]
    seconds: tuple[str, ...] = ()
    reward: bool = False


class LocalRule(Protocol):
    """What ``Rule.build`` returns for a local rule (one projection ``W (M, N)``).  A rule that keeps
    traces between intervals holds them in ``state``, a NamedTuple of tensors (None at rest), which
    checkpoints save and restore."""

    def reset(self, batch: int, n_pre: int, n_post: int) -> None:
        """Traces at rest for ``batch`` independent trials."""

    def interval(self, contributions, weight, z_pre, z_post, reward=None) -> Any:
        """Hand the weight change of one update interval (``z_pre (L, B, N)``, ``z_post (L, B, M)``
        bool spikes; ``reward (L, B)`` dopamine for rules with ``Rule.reward``) to
        ``contributions``."""


@dataclass(frozen=True)
class Rule:
    """One learning rule's declaration (see the module docstring)."""

    name: str
    summary: str
    kind: str
    mode: str | None = None
    keys: Mapping[str, Key] = field(default_factory=dict)
    resolve: Callable[[dict, set, Any], None] | None = None
    spiking_target: bool = False
    reward: bool = False
    build: Callable[[Any, str], LocalRule] | None = None
    brian2: Callable[[Mapping[str, Any], Any, float], Brian2Synapse] | None = None
    brian2_note: str = ""
    plan: Callable[..., dict[str, int]] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"rule {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "local" and self.build is None:
            raise ValueError(f"rule {self.name!r}: a local rule needs `build(graph, projection)`")
        if self.kind != "fixed" and not self.mode:
            raise ValueError(f"rule {self.name!r}: name the training mode that runs it (`mode`)")
        if self.brian2 is None and self.kind == "local" and not self.brian2_note:
            raise ValueError(f"rule {self.name!r}: no Brian2 counterpart: say why in `brian2_note`")

    def values(self, params: Mapping[str, Any], bounds: Any = None) -> dict[str, Any]:
        """The rule's parameters: ``params`` (SI values) with the declared defaults filled in and
        ``resolve`` applied (``bounds``: the projection's (low, high) or None).  ValueError naming
        the key when a key is unknown or the keys do not fit together."""
        unknown = sorted(set(params) - set(self.keys))
        if unknown:
            raise ValueError(f"rule {self.name!r} has no parameter {unknown[0]!r} "
                             f"(its keys: {', '.join(self.keys) or 'none'})")
        values = {key: params.get(key, spec[1]) for key, spec in self.keys.items()}
        if self.resolve is not None:
            self.resolve(values, set(params), bounds)
        return values


_RULES: dict[str, Rule] = {}


def register(rule: Rule) -> Rule:
    """Add ``rule`` to the registry (a second rule of the same name is refused) and return it."""
    old = _RULES.get(rule.name)
    if old is not None and old != rule:
        raise ValueError(f"a rule named {rule.name!r} is registered already; choose another name "
                         "or unregister the old one first")
    _RULES[rule.name] = rule
    return rule


def unregister(name: str) -> None:
    """Remove a rule (e.g. one a test registered)."""
    _RULES.pop(name, None)


def names() -> tuple[str, ...]:
    """Every registered rule name, in registration order."""
    return tuple(_RULES)


def rules_of_kind(kind: str) -> tuple[str, ...]:
    """Names of the rules of one :data:`KINDS` entry."""
    return tuple(name for name, rule in _RULES.items() if rule.kind == kind)


def get(name: str) -> Rule:
    """The rule called ``name``; ValueError naming the nearest registered rule otherwise."""
    rule = _RULES.get(name)
    if rule is None:
        near = difflib.get_close_matches(str(name), list(_RULES), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"no learning rule {name!r} (registered: {', '.join(_RULES)}){hint}")
    return rule


register(Rule("none", "fixed weights", "fixed"))
