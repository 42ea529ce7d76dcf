"""A projection: weighted connections from one population to another, and their vocabulary."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from neuro.model.checks import check_choice, check_int, check_name, finite
from neuro.model.errors import GraphError
from neuro.model.weights import Init
from neuro.numerics.formats import STORAGE_FORMATS
from neuro.rules import registry

__all__ = ["FORMATS", "PROJECTION_KINDS", "SIGNS", "Projection"]

#: Weight storage formats: the storage vocabulary of :mod:`neuro.numerics` (IEEE, then posits).
FORMATS: tuple[str, ...] = STORAGE_FORMATS
#: ``dense``: all-to-all between two different populations, weight (target, source);
#: ``recurrent``: all-to-all from a population to itself, acting one step later (Norse recurrent);
#: ``one_to_one``: neuron k to neuron k, weight (size,).
PROJECTION_KINDS: tuple[str, ...] = ("dense", "recurrent", "one_to_one")
#: Weight sign constraints.
SIGNS: tuple[str, ...] = ("excitatory", "inhibitory")


@dataclass(frozen=True)
class Projection:
    """Weighted connections from ``source`` to ``target``.

    Attributes:
        name: identifier, unique in the graph.
        source, target: population names.
        kind: one of :data:`PROJECTION_KINDS`.
        init: initial weights (:class:`Init`).
        format: weight storage format, one of :data:`FORMATS`.
        algebra: signature (p, q, r) of the Clifford algebra Cl(p,q,r) the weights live in;
            (0, 0, 0) means ordinary real (scalar) weights.
        grades: the grades each weight may hold, sorted, each in 0..p+q+r.
        delay: synaptic delay, seconds (a whole number of time steps).
        rule: learning rule, a name in :mod:`neuro.rules.registry` (``none`` keeps the weights fixed).
        rule_params: the rule's parameters (times in seconds), as (key, value) pairs sorted by key.
        bounds: (low, high) clip range of the weights after each update, or None.
        sign: ``"excitatory"`` (weights >= 0), ``"inhibitory"`` (weights <= 0) or None.
    """

    name: str
    source: str
    target: str
    kind: str
    init: Init
    format: str = "float32"
    algebra: tuple[int, int, int] = (0, 0, 0)
    grades: tuple[int, ...] = (0,)
    delay: float = 0.0
    rule: str = "none"
    rule_params: tuple[tuple[str, float | str | bool], ...] = ()
    bounds: tuple[float, float] | None = None
    sign: str | None = None

    def __post_init__(self) -> None:
        check_name(self.name, "projections")
        key = f"projections.{self.name}"
        for end in ("source", "target"):
            if not isinstance(getattr(self, end), str):
                raise GraphError(f"{key}.{end}", "a population name", repr(getattr(self, end)))
        check_choice(self.kind, PROJECTION_KINDS, f"{key}.kind")
        check_choice(self.format, FORMATS, f"{key}.format")
        check_choice(self.rule, registry.names(), f"{key}.rule")
        if not isinstance(self.init, Init):
            raise GraphError(f"{key}.init", "an Init", repr(self.init))
        self.init.check(f"{key}.init")
        algebra = tuple(self.algebra)
        if len(algebra) != 3:
            raise GraphError(f"{key}.algebra", "three integers [p, q, r]", repr(self.algebra))
        for a in algebra:
            check_int(a, 0, f"{key}.algebra")
        object.__setattr__(self, "algebra", algebra)
        n = sum(algebra)
        grades = tuple(self.grades)
        if not grades:
            raise GraphError(f"{key}.grades", "a non-empty list of grades", "[]")
        for g in grades:
            if isinstance(g, bool) or not isinstance(g, int) or not 0 <= g <= n:
                raise GraphError(
                    f"{key}.grades",
                    f"grades in 0..{n} (algebra Cl{algebra})",
                    repr(list(grades)),
                    "grade k needs an algebra with at least k basis vectors: p + q + r >= k",
                )
        if len(set(grades)) != len(grades):
            raise GraphError(f"{key}.grades", "distinct grades", repr(list(grades)))
        object.__setattr__(self, "grades", tuple(sorted(grades)))
        delay = finite(self.delay, f"{key}.delay")
        if delay < 0:
            raise GraphError(f"{key}.delay", "a delay >= 0", repr(delay))
        object.__setattr__(self, "delay", delay)
        params = []
        for item in self.rule_params:
            pkey, value = item
            if not isinstance(pkey, str):
                raise GraphError(f"{key}.rule_params", "string keys", repr(pkey))
            if not isinstance(value, str | bool):
                value = finite(value, f"{key}.rule_params.{pkey}")
            params.append((pkey, value))
        if self.bounds is not None:
            if len(tuple(self.bounds)) != 2:
                raise GraphError(f"{key}.bounds", "[low, high]", repr(self.bounds))
            lo, hi = (finite(b, f"{key}.bounds") for b in self.bounds)
            if not lo < hi:
                raise GraphError(f"{key}.bounds", "[low, high] with low < high", repr([lo, hi]))
            object.__setattr__(self, "bounds", (lo, hi))
        if self.sign is not None:
            check_choice(self.sign, SIGNS, f"{key}.sign")
            if self.bounds is not None:
                lo, hi = self.bounds
                if self.sign == "excitatory" and hi <= 0:
                    raise GraphError(
                        f"{key}.bounds",
                        "bounds that allow positive (excitatory) weights",
                        repr([lo, hi]),
                    )
                if self.sign == "inhibitory" and lo >= 0:
                    raise GraphError(
                        f"{key}.bounds",
                        "bounds that allow negative (inhibitory) weights",
                        repr([lo, hi]),
                    )
        object.__setattr__(self, "rule_params", tuple(sorted(self._rule_values(dict(params), key).items())))

    def _rule_values(self, given: dict, key: str) -> dict:
        """The rule's parameters with its declared defaults filled in and its cross-key checks run
        (:meth:`neuro.rules.registry.Rule.values`), so a graph built in code is resolved like one
        read from a model file."""
        try:
            return registry.get(self.rule).values(given, self.bounds)
        except registry.RuleKeyError as err:
            where = f"{key}.{err.key}" if err.table == "projection" else f"{key}.rule_params.{err.key}"
            found = err.found or repr(given.get(err.key))
            expected = err.expected.replace("{value}", repr(err.value))
            raise GraphError(where, expected, found, err.hint) from None
        except ValueError as err:
            raise GraphError(f"{key}.rule_params", f"the keys of rule {self.rule!r}", str(err)) from None

    @property
    def n_components(self) -> int:
        """Number of blade coefficients per weight: sum of C(p+q+r, g) over the grades."""
        n = sum(self.algebra)
        return sum(math.comb(n, g) for g in self.grades)

    @property
    def params(self) -> dict[str, float | str | bool]:
        """The rule parameters as a dict (times in seconds)."""
        return dict(self.rule_params)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form of every attribute."""
        return {
            "name": self.name,
            "source": self.source,
            "target": self.target,
            "kind": self.kind,
            "init": self.init.to_dict(),
            "format": self.format,
            "algebra": list(self.algebra),
            "grades": list(self.grades),
            "delay": self.delay,
            "rule": self.rule,
            "rule_params": dict(self.rule_params),
            "bounds": None if self.bounds is None else list(self.bounds),
            "sign": self.sign,
        }
