"""``UpdateEngine``: the one place where every learning rule changes weights.

Shaped like ``torch.optim.Optimizer`` (``param_groups``, ``step()``, ``state_dict()``), but a rule
does not leave gradients in ``p.grad``: it hands *weight changes* to the engine, which adds them
exactly into one quire per parameter.  Loss-based rules contribute the negative gradient.

What ``step()`` computes, for a parameter ``w`` with accumulated exact sum ``S``:

1. If ``torch.distributed`` is initialised: agree on a common limb window (all-reduce MIN of the
   window's low end, MAX of its high end), widen every worker's quire to it, all-reduce SUM of the
   int64 limbs and MAX of the NaR mask.  Integer sums are associative, so the result does not
   depend on the number of workers or on which worker held which contribution.
2. The update direction ``D``: ``S`` itself; with ``momentum = beta``, the buffer
   ``m <- round_fmt(beta * m + S)`` (one rounding to the group's format; ``beta * m`` is an exact
   posit product); with ``adam=True``, Adam moments in the group's format, second moments per
   grade block (see :meth:`UpdateEngine.step`).
3. ``lr * D`` exactly: ``lr`` is rounded to the group's format (it is a posit value, the same
   number on every machine) and written ``lr = sig * 2**e``; the quire's integer limbs are
   multiplied by the integer ``sig`` and shifted by ``e`` bits (:meth:`Quire.scaled`).  This is
   done at step time rather than folding ``lr`` into every contribution so that ``lr`` may change
   between steps (schedules) exactly as with torch optimisers, and so that a contribution is not
   rounded together with ``lr`` (a three-factor product would be exact too, but ``accumulate`` of
   a plain delta would then cost an ``fma`` instead of an ``add``).
4. ``w`` is loaded into a fresh quire exactly (any float64 value, bit for bit), ``lr * D`` is merged
   in, and the exact sum is rounded ONCE to the parameter's storage format: posits with
   round-to-nearest-even (``Quire.to_bits``), float32 by rounding the exact value once to float32
   (the nearest float64 is read first and the exact remainder settles the rare case where it lies
   exactly halfway between two float32 values, so there is no double-rounding error), or
   stochastically with a counter-based stream keyed by ``(seed, step, parameter index)``
   (:func:`neuro.numerics.round_quire`, :func:`neuro.numerics.counter_uniform`). That is the
   definition; the computation (same bits) first tries :mod:`neuro.numerics.fast_rounding`: ``lr * D``
   read to float64 with a rigorous error bound straight from the limbs, and a rounding test that
   decides nearly every entry; only the undecided ones build the exact sum.

   Steps 2-5 run over blocks of leading rows (:func:`neuro.engine.step.step_block_rows`), so
   ``step``'s temporary memory is bounded by :data:`~neuro.engine.step.STEP_WORKSPACE_BYTES`
   whatever the parameter's size.
5. The parameter is kept in its type: coefficients outside its grades are set to exactly 0, bounds
   and Dale's-law signs are clamped (bounds rounded inward to storage values). A rotor parameter
   instead takes the exponential-map retraction ``R <- R exp(B)``, ``B = <R~ (lr D)>_2`` (with
   ``D = -G`` this is ``R exp(-lr <R~ G>_2)``), renormalised by ``sqrt(<R R~>_0)`` in float64 and
   then rounded once to storage; see :func:`~neuro.engine.slot.rotor_norm_bound` for the
   ``|R R~ - 1|`` guarantee.

Event path (same bits, less work).  ``accumulate_events``, an outer product whose rows hold few
non-zeros on one side (events: 0/1 rows times real rows), is added term by term
(:meth:`Quire.add_outer_events`), and the engine notes the rows and columns those terms reached.
If nothing else arrived before ``step()``, the parameter is a plain scalar without momentum/Adam
and currently inside its type (storage values, finite, within bounds/sign, no -0: a few passes
check it), every other entry would keep its bits, so ``step()`` visits only the noted rows and
columns (:func:`neuro.engine.step.step_entries`): nearest rounding to float storage in exact
integer arithmetic (:func:`neuro.numerics.fast_rounding.round_entries`), the rest as above.

Layout: :mod:`neuro.engine.slot` (one parameter: storage, type, constraints), :mod:`neuro.engine.step`
(the step), :mod:`neuro.engine.state` (state dict), this module (groups, contributions, the
distributed merge).  The engine knows number formats (:mod:`neuro.numerics`) and grades
(:mod:`neuro.algebra`); it knows nothing of neurons or of the rules that send contributions.

Contributions are values of the group's format: ``accumulate`` / ``accumulate_outer`` /
``accumulate_events`` (the :class:`~neuro.engine.contributions.Contributions` protocol every rule
receives) round each factor to the group's format (as any quire operation does) and then sum
products exactly.

Parameters stay ordinary tensors (``nn.Parameter`` or not) updated in place through ``p.data``;
after registration and after every step their values are exactly representable in their storage
format. Registration snaps the initial values into storage and type (rounded to nearest storage
value, projected onto the grades, clamped, rotors normalised).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from neuro.engine import state as engine_state
from neuro.engine.params import ParamType
from neuro.engine.slot import Slot
from neuro.engine.step import step_dense, step_entries
from neuro.numerics import POSIT16, ROUNDINGS, PositFormat, Quire
from neuro.numerics.formats import resolve_storage

__all__ = ["UpdateEngine"]


class UpdateEngine:
    """Exact, order-independent weight updates for every learning rule (see the module docstring).

    Args:
        params: an iterable of tensors, or of dicts (parameter groups) with key ``"params"`` and any of
            the options below (overriding the defaults), plus optional ``"names"`` (one string per
            parameter, used in error messages).
        format: the group's PositFormat: the quire's format, the format contributions are rounded to,
            the format of ``lr`` and of momentum/Adam buffers, and the default storage format.
        lr: learning rate (dimensionless factor on the accumulated weight change); rounded to
            ``format`` when used.
        rounding: ``"nearest"`` or ``"stochastic"``.
        seed: seed of the counter-based stochastic-rounding stream, keyed by (seed, step, param index).
        momentum: ``beta`` of heavy-ball momentum ``m <- beta m + S``, ``w <- w + lr m`` (0: off).
        adam: use Adam-style moments (``betas``, ``eps``) with second moments per grade block.
        type: the group's :class:`~neuro.engine.params.ParamType` (default: plain scalars).
        process_group: the ``torch.distributed`` group whose workers' contributions are merged at
            each step (default: the whole world, when torch.distributed is initialised).
        merge: merge the workers' contributions at each step (default); ``False`` for a replicated
            run, in which every worker computes the same contributions itself (sequential local
            rules) and nothing needs to travel.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        *,
        format: PositFormat = POSIT16,
        lr: float = 1.0,
        rounding: str = "nearest",
        seed: int = 0,
        momentum: float = 0.0,
        adam: bool = False,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        type: ParamType | None = None,
        process_group: Any = None,
        merge: bool = True,
    ) -> None:
        self.defaults: dict[str, Any] = dict(
            format=format,
            lr=lr,
            rounding=rounding,
            momentum=momentum,
            adam=adam,
            betas=tuple(betas),
            eps=eps,
            type=type if type is not None else ParamType(),
        )
        self.seed = int(seed)
        self.process_group = process_group
        self.merge = bool(merge)
        self.param_groups: list[dict] = []
        self._slots: list[Slot] = []
        self._by_id: dict[int, Slot] = {}
        params = list(params)
        if not params:
            raise ValueError("UpdateEngine: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for g in groups:
            self.add_param_group(g)

    # ------------------------------------------------------------------ groups
    def add_param_group(self, group: dict) -> None:
        """Add a parameter group (dict with ``"params"`` and optional per-group options)."""
        if not isinstance(group, dict) or "params" not in group:
            raise ValueError("UpdateEngine: a parameter group is a dict with a 'params' key")
        unknown = set(group) - set(self.defaults) - {"params", "names"}
        if unknown:
            raise ValueError(
                f"UpdateEngine: unknown parameter-group option(s) {sorted(unknown)}; "
                f"allowed: {sorted(self.defaults)} and 'names'"
            )
        g = {**self.defaults, **group}
        params = g["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        g["params"] = params
        gi = len(self.param_groups)
        names = g.get("names") or [f"param_groups[{gi}]['params'][{i}]" for i in range(len(params))]
        if len(names) != len(params):
            raise ValueError(f"UpdateEngine: group {gi} has {len(params)} params but {len(names)} names")
        g["names"] = list(names)
        self._check_options(g, gi)
        for p, name in zip(params, names):
            if id(p) in self._by_id:
                raise ValueError(
                    f"{name}: this tensor is already registered with the engine "
                    f"(as {self._by_id[id(p)].name})"
                )
            slot = Slot(p, len(self._slots), g, name)
            with torch.no_grad():
                slot.write(slot.snap(p.detach().to(torch.float64)))
            self._slots.append(slot)
            self._by_id[id(p)] = slot
        self.param_groups.append(g)

    @staticmethod
    def _check_options(g: dict, gi: int) -> None:
        where = f"UpdateEngine group {gi}"
        if not isinstance(g["format"], PositFormat):
            fmt = resolve_storage(g["format"]) if isinstance(g["format"], str) else g["format"]
            if not isinstance(fmt, PositFormat):
                raise ValueError(
                    f"{where}: format must be a PositFormat (the quire's format), e.g. POSIT16; "
                    f"got {g['format']!r}. Use ParamType(storage='float32') for float storage"
                )
            g["format"] = fmt
        if g["rounding"] not in ROUNDINGS:
            raise ValueError(f"{where}: rounding must be one of {ROUNDINGS}, got {g['rounding']!r}")
        if not isinstance(g["type"], ParamType):
            raise ValueError(f"{where}: type must be a ParamType, got {g['type']!r}")
        if not (isinstance(g["lr"], int | float) and math.isfinite(g["lr"]) and g["lr"] >= 0):
            raise ValueError(f"{where}: lr must be a finite number >= 0, got {g['lr']!r}")
        if not 0 <= g["momentum"] < 1:
            raise ValueError(f"{where}: momentum must lie in [0, 1), got {g['momentum']!r}")
        if g["adam"] and g["momentum"]:
            raise ValueError(f"{where}: choose momentum or adam, not both")
        g["betas"] = tuple(float(b) for b in g["betas"])

    # ------------------------------------------------------------------ contributions
    def _slot(self, param: torch.Tensor) -> Slot:
        slot = self._by_id.get(id(param))
        if slot is None or slot.param is not param:
            shape = tuple(getattr(param, "shape", ()))
            raise ValueError(
                f"UpdateEngine: this tensor (shape {shape}) is not a parameter of the engine; "
                f"pass it in `params` when building the engine (or add_param_group)"
            )
        return slot

    def accumulate(self, param: torch.Tensor, delta: torch.Tensor) -> None:
        """Add a weight change exactly: ``delta`` has ``param``'s shape, or extra leading dims (e.g.
        per-sample contributions ``(batch, *param.shape)``) that are summed exactly. Each entry is
        first rounded to the group's format. Same unit as the parameter (per unit ``lr``)."""
        slot = self._slot(param)
        if not isinstance(delta, torch.Tensor):
            delta = torch.as_tensor(delta, dtype=torch.float64)
        pshape = tuple(param.shape)
        if delta.dim() < len(pshape) or tuple(delta.shape[delta.dim() - len(pshape) :]) != pshape:
            raise ValueError(
                f"{slot.name}: delta of shape {tuple(delta.shape)} must have the parameter's "
                f"shape {pshape}, optionally with extra leading dims that are summed"
            )
        extra = tuple(delta.shape[: delta.dim() - len(pshape)])
        slot.quire.add(delta.reshape(*extra, *slot.qshape))
        slot.touched = slot.dense = True

    def accumulate_outer(
        self,
        param: torch.Tensor,
        post: torch.Tensor,
        pre: torch.Tensor,
        scale: torch.Tensor | float | None = None,
    ) -> None:
        """Add ``sum_k scale * post[k, m] * pre[k, ...]`` exactly into ``param[m, ...]``.

        Args:
            param: a parameter of shape ``(M, *rest)`` (``rest`` includes a multivector axis).
            post: ``(K, M)`` or ``(M,)``, e.g. errors or 0/1 events over K = time x batch (bool
                tensors are exact 0/1).
            pre: ``(K, *rest)`` or ``rest``, e.g. events or traces.
            scale: None, a scalar, or a tensor broadcastable to ``post`` (e.g. ``A_plus``, a reward
                per sample); rounded to the group's format, the three-factor product is exact.
        """
        slot, post, pre = self._outer_factors(param, post, pre, "accumulate_outer")
        slot.touched = slot.dense = True
        slot.quire.add_outer(post, pre, scale)

    def accumulate_events(self, param: torch.Tensor, post: torch.Tensor, pre: torch.Tensor) -> None:
        """:meth:`accumulate_outer` without a scale for factors of which one is 0/1 events (spikes)
        on few rows: the terms are added one by one (:meth:`Quire.add_outer_events`) and the rows
        and columns they reached are noted, so that ``step()`` visits only those (see the module
        docstring); too many terms, or a factor that is not finite, take the dense path."""
        slot, post, pre = self._outer_factors(param, post, pre, "accumulate_events")
        slot.touched = True
        hit = slot.quire.add_outer_events(post, pre)
        if hit is None:
            slot.quire.add_outer(post, pre)
            slot.dense = True
        elif not slot.dense:
            slot.note_events(*hit)

    def _outer_factors(self, param, post, pre, what: str) -> tuple[Slot, torch.Tensor, torch.Tensor]:
        """``(slot, post (K, M), pre (K, N))`` of an outer-product contribution, shapes checked."""
        slot = self._slot(param)
        if len(slot.qshape) != 2:
            raise ValueError(
                f"{slot.name}: {what} needs a parameter with at least 2 value "
                f"axes (M, N...), got shape {tuple(param.shape)}"
            )
        post = post if isinstance(post, torch.Tensor) else torch.as_tensor(post, dtype=torch.float64)
        pre = pre if isinstance(pre, torch.Tensor) else torch.as_tensor(pre, dtype=torch.float64)
        rest = tuple(param.shape[1:])
        rests = {rest, tuple(slot.vshape[1:])}  # a Cl(0) parameter takes pre with or without its 1-axis
        if post.dim() == 1:
            post = post.unsqueeze(0)
        if tuple(pre.shape) in rests:
            pre = pre.unsqueeze(0)
        if (
            post.dim() != 2
            or post.shape[1] != slot.qshape[0]
            or tuple(pre.shape[1:]) not in rests
            or pre.shape[0] != post.shape[0]
        ):
            raise ValueError(
                f"{slot.name}: {what} expects post (K, {slot.qshape[0]}) and pre "
                f"(K, {', '.join(map(str, rest))}), got post {tuple(post.shape)} and pre "
                f"{tuple(pre.shape)}"
            )
        return slot, post, pre.reshape(pre.shape[0], -1)

    def clear(self) -> None:
        """Drop every pending contribution (like ``zero_grad``); quire windows stay allocated."""
        for slot in self._slots:
            slot.quire.clear()
            slot.forget_events()

    # ------------------------------------------------------------------ distributed merge
    def _all_reduce(self) -> None:
        import torch.distributed as dist

        big = 1 << 40
        meta = torch.zeros(len(self._slots), 3, dtype=torch.int64)
        for i, slot in enumerate(self._slots):
            limbs = slot.quire.limbs
            length = limbs.shape[-1]
            lo, hi = (slot.quire.offset, slot.quire.offset + length) if length else (big, -big)
            meta[i] = torch.tensor([-lo, hi, int(slot.touched)])
        group = self.process_group
        dist.all_reduce(meta, op=dist.ReduceOp.MAX, group=group)
        for i, slot in enumerate(self._slots):
            lo, hi, touched = -int(meta[i, 0]), int(meta[i, 1]), bool(meta[i, 2])
            slot.touched = touched
            if not touched or hi <= lo:
                continue
            q = slot.quire
            q.widen(lo, hi + 1)  # one spare limb on top for the carries of the sum
            limbs = q.limbs.clone()
            nar = q.nar.to(torch.uint8)
            dist.all_reduce(limbs, op=dist.ReduceOp.SUM, group=group)
            dist.all_reduce(nar, op=dist.ReduceOp.MAX, group=group)
            slot.quire = Quire.from_limbs(q.fmt, limbs, lo, nar.bool())

    def reserve_window(self, param: torch.Tensor, window: tuple[int, int]) -> None:
        """Allocate ``param``'s quire limbs ``[lo, hi)`` now (absolute limb indices, 32 bits each:
        limb ``i`` weighs ``2**(32 i)``), so that contributions inside the window allocate nothing
        later; one outside widens it (never truncates)."""
        self._slot(param).quire.widen(*window)

    def accumulated(self, param: torch.Tensor) -> torch.Tensor:
        """The exact sum of ``param``'s contributions since the last step, read to the nearest
        float64 (NaR -> NaN), in ``param``'s value shape; ``lr`` is not applied."""
        slot = self._slot(param)
        return slot.quire.to_float().reshape(slot.vshape)

    def effective_lr(self, group: dict) -> float:
        """The learning rate actually used: ``group['lr']`` rounded to the group's format."""
        return (
            float(group["format"].quantize(torch.tensor([float(group["lr"])], dtype=torch.float64))[0])
            if group["lr"]
            else 0.0
        )

    # ------------------------------------------------------------------ step
    @torch.no_grad()
    def step(self) -> None:
        """Apply every parameter's accumulated contributions (see the module docstring), then clear.

        Works through each parameter in blocks of leading rows
        (:func:`~neuro.engine.step.step_block_rows`), so its temporary memory does not grow with
        the tensor. Parameters with no contribution
        since the last step are left untouched (their step counters do not advance). Raises
        FloatingPointError, leaving that parameter unchanged, when its exact sum is NaR (a NaN/inf
        contribution or a sum beyond the quire's range).
        """
        import torch.distributed as dist

        distributed = self.merge and dist.is_available() and dist.is_initialized()
        if distributed:
            self._all_reduce()
        for slot in self._slots:
            if not slot.touched:
                continue
            index = None if distributed else slot.step_entries()
            if index is not None:
                step_entries(slot, index, self.seed)
            else:
                step_dense(slot, self.seed)

    # ------------------------------------------------------------------ memory
    def quire_bytes(self) -> int:
        """Bytes of quire state currently allocated over all parameters (limbs + NaR masks)."""
        return sum(slot.quire.nbytes for slot in self._slots)

    def buffer_bytes(self) -> int:
        """Bytes of momentum / Adam buffers."""
        return sum(b.numel() * b.element_size() for s in self._slots for b in s.buffers.values())

    def parameters(self) -> list[torch.Tensor]:
        """The registered parameters in engine order (the index used by state_dict and the RNG)."""
        return [s.param for s in self._slots]

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything needed to resume bit-exactly: tensors and JSON-able values only (the layout is
        in :mod:`neuro.engine.state`). ``step`` is also the stochastic-rounding counter. Use
        :func:`~neuro.engine.state.flatten_state_dict` to get ``(dict of tensors, JSON metadata)``
        for safetensors.
        """
        state = {slot.index: engine_state.slot_state(slot) for slot in self._slots}
        groups = [
            engine_state.group_state(g, [self._by_id[id(p)].index for p in g["params"]])
            for g in self.param_groups
        ]
        version = engine_state.STATE_VERSION
        return {"version": version, "seed": self.seed, "state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a state written by :meth:`state_dict` into an engine built on the same parameters
        (same groups, shapes, formats and types). Group options (lr, rounding, ...) are restored."""
        engine_state.check_state(state_dict, self.param_groups)
        self.seed = int(state_dict["seed"])
        for saved, g in zip(state_dict["param_groups"], self.param_groups):
            engine_state.restore_group(saved, g)
            for idx, p in zip(saved["params"], g["params"]):
                engine_state.restore_slot(self._by_id[id(p)], state_dict["state"], idx)
