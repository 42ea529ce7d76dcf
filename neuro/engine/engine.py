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
   multiplied by the integer ``sig`` and shifted by ``e`` bits (``exact.scale_quire``).  This is
   done at step time rather than folding ``lr`` into every contribution so that ``lr`` may change
   between steps (schedules) exactly as with torch optimisers, and so that a contribution is not
   rounded together with ``lr`` (a three-factor product would be exact too, but ``accumulate`` of
   a plain delta would then cost an ``fma`` instead of an ``add``).
4. ``w`` is loaded into a fresh quire exactly (any float64 value, bit for bit), ``lr * D`` is merged
   in, and the exact sum is rounded ONCE to the parameter's storage format: posits with
   round-to-nearest-even (``Quire.to_bits``), float32 by rounding the exact value once to float32
   (the nearest float64 is read first and the exact remainder settles the rare case where it lies
   exactly halfway between two float32 values, so there is no double-rounding error), or
   stochastically with a counter-based stream keyed by ``(seed, step, parameter index)``. That is
   the definition; the computation (same bits) first tries :mod:`neuro.engine.fast`: ``lr * D``
   read to float64 with a rigorous error bound straight from the limbs, and a rounding test that
   decides nearly every entry; only the undecided ones build the exact sum.

   Steps 2-5 run over blocks of leading rows (:func:`step_block_rows`), so ``step``'s temporary
   memory is bounded by :data:`STEP_WORKSPACE_BYTES` whatever the parameter's size.
5. The parameter is kept in its type: coefficients outside its grades are set to exactly 0, bounds
   and Dale's-law signs are clamped (bounds rounded inward to storage values). A rotor parameter
   instead takes the exponential-map retraction ``R <- R exp(B)``, ``B = <R~ (lr D)>_2`` (with
   ``D = -G`` this is ``R exp(-lr <R~ G>_2)``), renormalised by ``sqrt(<R R~>_0)`` in float64 and
   then rounded once to storage; see :func:`rotor_norm_bound` for the ``|R R~ - 1|`` guarantee.

Event path (same bits, less work).  An ``accumulate_outer`` whose rows hold few non-zeros on one
side -- spike trains times traces, as STDP sends them -- is added term by term
(:meth:`Quire.add_outer_events`), and the engine notes the rows and columns those terms reached.
If nothing else arrived before ``step()``, the parameter is a plain scalar without momentum/Adam
and currently inside its type (storage values, finite, within bounds/sign, no -0: a few passes
check it), every other entry would keep its bits, so ``step()`` visits only the noted rows and
columns: nearest rounding to float storage through ``neuro/_kernels/quire.c`` (exact integer
arithmetic), the rest through :meth:`UpdateEngine._round_rows`.

Contributions are values of the group's format: ``accumulate`` / ``accumulate_outer`` round each
factor to the group's format (as any quire operation does) and then sum products exactly.

Parameters stay ordinary tensors (``nn.Parameter`` or not) updated in place through ``p.data``;
after registration and after every step their values are exactly representable in their storage
format. Registration snaps the initial values into storage and type (rounded to nearest storage
value, projected onto the grades, clamped, rotors normalised).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from typing import Any

import torch

from neuro.engine.exact import (
    counter_uniform,
    quire_from_float64,
    round_quire,
    round_sum_nearest,
    scale_quire,
    stream_key,
)
from neuro.engine.fast import estimate_float, estimate_limbs, round_nearest_fast, round_stochastic_fast
from neuro.engine.params import (
    Bounds,
    ParamType,
    Sign,
    resolve_storage,
    storage_from_json,
    storage_name,
    storage_to_json,
)
from neuro.numerics import POSIT16, POSIT32, PositFormat, Quire
from neuro.numerics.quire import compiled_kernels

__all__ = [
    "UpdateEngine",
    "rotor_norm_bound",
    "flatten_state_dict",
    "unflatten_state_dict",
    "step_bytes_per_entry",
    "step_block_rows",
    "step_workspace_bytes",
]

_ROUNDINGS = ("nearest", "stochastic")
_FAST = True  # the fast rounding path of neuro.engine.fast (tests switch it off to compare bits)
#: Temporary memory of step() per block of rows (the blocks' size follows from it).
STEP_WORKSPACE_BYTES = 8 << 20
_STATE_VERSION = 1


def _storage_dtype_ok(storage: PositFormat | str, dtype: torch.dtype) -> bool:
    if storage == "float64":
        return dtype == torch.float64
    if storage == "float32" or (isinstance(storage, PositFormat) and storage.fits_float32):
        return dtype in (torch.float32, torch.float64)
    return dtype == torch.float64


def _snap_inward(value: float, storage: PositFormat | str, upward: bool) -> float:
    """The storage value nearest to ``value`` on the inside of a bound (``upward``: >= value)."""
    if math.isinf(value):
        return value
    from neuro.engine.exact import next_value

    x = torch.tensor([value], dtype=torch.float64)
    q = quire_from_float64(storage if isinstance(storage, PositFormat) else POSIT32, x)
    c = round_quire(q, storage)
    bad = (c < x) if upward else (c > x)
    if bool(bad.any()):
        c = next_value(c, storage, torch.tensor([1 if upward else -1]))
        if bool(((c < x) if upward else (c > x)).any()):
            raise ValueError(f"bound {value} lies outside the range of storage {storage_name(storage)}")
    return float(c[0])


def step_bytes_per_entry(limbs: int, general: bool) -> int:
    """Temporary bytes per entry of ``UpdateEngine.step`` for a quire window of ``limbs`` limbs,
    measured with ``neuro.train.plan.TensorBytes`` (bposit32 quire, float32 weights): ``general`` for
    momentum, Adam and rotors (exact quire reads and moments; Adam: 510 B at 8 limbs, 387 B at 5),
    else the fast path (nearest 90 B, stochastic 173 B at 8 limbs)."""
    return 182 + 41 * limbs if general else 60 + 14 * limbs


def step_block_rows(rows: int, per_row: int, limbs: int, general: bool = True) -> int:
    """Rows per block of ``step`` on a parameter of ``rows x per_row`` entries (at least one row):
    as many as :data:`STEP_WORKSPACE_BYTES` allows."""
    entries = STEP_WORKSPACE_BYTES // step_bytes_per_entry(limbs, general)
    return min(rows, max(1, entries // max(1, per_row)))


def step_workspace_bytes(rows: int, per_row: int, limbs: int, general: bool = True) -> int:
    """Peak temporary bytes of ``step`` on a parameter of ``rows x per_row`` entries: one block."""
    return step_block_rows(rows, per_row, limbs, general) * per_row * step_bytes_per_entry(limbs, general)


def rotor_norm_bound(algebra, storage: PositFormat | str, rounding: str = "nearest") -> float:
    """Guaranteed bound on ``max |coefficients of (R R~ - 1)|`` for a stored rotor after each step.

    Holds for Euclidean algebras ``Cl(n, 0, 0)`` with ``n <= 3`` (where ``R R~`` of an even element is
    the scalar ``sum_b r_b**2``). Before rounding, the float64 rotor ``R`` has ``R R~ = 1`` to a few
    float64 ulps, so ``||R||_2 = 1`` and every coefficient lies in [-1, 1]. Rounding each coefficient
    changes it by at most ``h`` (half the largest storage gap inside [-1, 1], i.e. half the gap
    just below 1; a full gap for stochastic rounding), so ``||D||_2 <= sqrt(#even blades) * h``.
    Each coefficient of ``(R + D)(R + D)~ - R R~ = R D~ + D R~ + D D~`` is a signed sum over a
    permutation of blades, hence at most ``2 ||R|| ||D|| + ||D||**2`` by Cauchy-Schwarz. Returns that
    plus 1e-12 for the float64 part. Posit16: 4.9e-4 (Cl(3)); float32: 2.4e-7.
    """
    from neuro.engine.exact import next_value

    one = torch.ones(1, dtype=torch.float64)
    below = float(next_value(one, storage, torch.tensor([-1]))[0])
    h = (1.0 - below) / (2.0 if rounding == "nearest" else 1.0)
    blades = max(1, algebra.dim // 2)
    d = math.sqrt(blades) * h
    return 2 * d + d * d + 1e-12


def _rows_quire(fmt: PositFormat, rows: torch.Tensor, offset: int) -> Quire:
    """A quire over normalised limb rows ``(n, L)`` of the parameter's quire, without copying them
    (``Quire.from_limbs`` would copy and re-normalise). No NaR: ``step`` checked that first. The
    rows may be changed by a ``merge`` into it: ``step`` clears the quire afterwards anyway."""
    q = Quire(fmt, rows.shape[:-1], device=rows.device)
    q._limbs, q._offset = rows, offset  # normalised already, nothing pending
    return q


def _nar_error(slot: _Slot) -> FloatingPointError:
    return FloatingPointError(
        f"{slot.name}: the accumulated update is NaR (a NaN/inf contribution, or a sum beyond the "
        f"{slot.quire.fmt.name} quire's range); the parameter was left unchanged"
    )


class _Slot:
    """Engine-side record of one parameter: its quire, storage, type, counters and buffers."""

    def __init__(self, param: torch.Tensor, index: int, group: dict, name: str):
        self.param = param
        self.index = index
        self.group = group
        self.name = name
        ptype: ParamType = group["type"]
        self.type = ptype
        fmt: PositFormat = group["format"]
        self.storage = ptype.storage if ptype.storage is not None else fmt
        if not isinstance(param, torch.Tensor) or not param.is_floating_point():
            raise ValueError(
                f"{name}: parameters must be floating-point tensors, got "
                f"{getattr(param, 'dtype', type(param).__name__)}"
            )
        if not _storage_dtype_ok(self.storage, param.dtype):
            if isinstance(self.storage, PositFormat):
                why = (
                    f"{self.storage.name} values have up to {self.storage.max_fraction_bits} fraction "
                    f"bits and scales 2**{self.storage.min_scale}..2**{self.storage.max_scale}, "
                    f"which float32 cannot hold exactly"
                )
                fix = (
                    "make it a float64 tensor (e.g. nn.Parameter(w.double())), or store it as "
                    "posit16/posit8/float32"
                )
                need = "float64" if not self.storage.fits_float32 else "float32 or float64"
            else:
                why = f"{self.storage} storage"
                need = "float64" if self.storage == "float64" else "float32 or float64"
                fix = f"convert it (w.to(torch.{need.split()[0]}))"
            raise ValueError(
                f"{name}: storage {storage_name(self.storage)} needs a {need} tensor, got {param.dtype} "
                f"({why}); {fix}"
            )
        ptype.check_shape(param, name)
        # Shapes: value shape (a Cl(0) trailing 1 dropped, so Cl(0) scalars == plain scalars), and the
        # quire's shape (leading axis kept, the rest flattened, so outer products are 2-D).
        vshape = tuple(param.shape)
        if ptype.is_multivector and ptype.dim == 1:
            vshape = vshape[:-1]
        self.vshape = vshape
        self.qshape = (vshape[0], math.prod(vshape[1:])) if len(vshape) >= 2 else vshape
        self.quire = Quire(fmt, self.qshape, device=param.device)
        # step() works in blocks of leading rows; a lone multivector (or a 0-d scalar) is one row.
        self.whole = len(self.qshape) == 0 or (ptype.is_multivector and param.dim() == 1)
        self.rows = 1 if self.whole else self.qshape[0]
        self.per_row = max(1, math.prod(self.qshape) if self.whole else math.prod(self.qshape[1:]))
        self.touched = False
        self.dense = False  # a contribution since the last step may have reached every entry
        # rows (M,) and columns (N,) whose entries event terms reached since the last step
        self.event_rows: torch.Tensor | None = None
        self.event_cols: torch.Tensor | None = None
        self.step = 0
        self.buffers: dict[str, torch.Tensor] = {}
        self.lo = self.hi = None
        if isinstance(ptype.constraint, Bounds):
            self.lo = _snap_inward(float(ptype.constraint.lo), self.storage, upward=True)
            self.hi = _snap_inward(float(ptype.constraint.hi), self.storage, upward=False)
            if self.lo > self.hi:
                raise ValueError(
                    f"{name}: no {storage_name(self.storage)} value lies inside {ptype.constraint}"
                )

    # ------------------------------------------------------------------ views
    def coeffs(self, x: torch.Tensor) -> torch.Tensor:
        """A tensor of the parameter's shape viewed as ``(..., dim)`` coefficients."""
        return self.type.value_view(x)

    def to_q(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(self.qshape)

    def from_q(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(self.param.shape)

    # ------------------------------------------------------------------ keeping the type
    def uniform(self, seed: int, step: int, a: int = 0, b: int | None = None) -> torch.Tensor:
        """The stochastic-rounding numbers of ``step``: all (quire shape), or entries ``a:b`` (flat)."""
        key = stream_key(seed, step, self.index)
        if b is None:
            return counter_uniform(key, self.qshape, device=self.param.device)
        return counter_uniform(key, (b - a,), device=self.param.device, start=a)

    def uniform_at(self, seed: int, step: int, index: torch.Tensor) -> torch.Tensor:
        """The stochastic-rounding numbers of ``step`` at flat entries ``index``."""
        key = stream_key(seed, step, self.index)
        return counter_uniform(key, tuple(index.shape), device=self.param.device, index=index)

    def note_events(self, rows: torch.Tensor, cols: torch.Tensor) -> None:
        """Record that event terms reached whole ``rows`` and whole ``cols`` (long indices)."""
        if self.event_rows is None:
            dev = self.param.device
            self.event_rows = torch.zeros(self.qshape[0], dtype=torch.bool, device=dev)
            self.event_cols = torch.zeros(self.qshape[1], dtype=torch.bool, device=dev)
        self.event_rows.index_fill_(0, rows, True)
        self.event_cols.index_fill_(0, cols, True)

    def event_entries(self) -> torch.Tensor:
        """Flat indices of the entries in a noted row or column, each once."""
        m, n = self.qshape
        rows = self.event_rows.nonzero().squeeze(1)
        cols = self.event_cols.nonzero().squeeze(1)
        other = (~self.event_rows).nonzero().squeeze(1)  # rows not already taken whole
        dev = rows.device
        return torch.cat(
            [
                (rows * n).unsqueeze(1).add(torch.arange(n, device=dev)).reshape(-1),
                (other * n).unsqueeze(1).add(cols).reshape(-1),
            ]
        )

    def fixed_when_unchanged(self) -> bool:
        """Whether every entry with a zero update keeps its bits through ``step``: plain scalars
        without momentum/Adam whose values are storage values (automatic for float storage in its
        own dtype; posit storage is checked by rounding), finite, inside their bounds or sign and
        without negative zeros (``step`` maps -0 to +0).  Two passes over the parameter (about ten
        for posit storage); False sends ``step`` over every entry."""
        g, w = self.group, self.param.data
        if g["momentum"] or g["adam"] or self.type.is_multivector or not w.is_contiguous():
            return False
        if isinstance(self.storage, PositFormat):
            if not bool((self.storage.quantize(w) == w).all()):  # NaR (NaN) never compares equal
                return False
        elif str(w.dtype) != f"torch.{self.storage}":
            return False
        lo, hi = (float(v) for v in torch.aminmax(w))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return False
        con = self.type.constraint
        if isinstance(con, Bounds) and not (self.lo <= lo and hi <= self.hi):
            return False
        if isinstance(con, Sign) and not (lo >= 0.0 if con.kind == "excitatory" else hi <= 0.0):
            return False
        # -0.0 is the smallest bit pattern read as a signed integer (negative floats count down)
        as_int = w.view(torch.int32 if w.dtype == torch.float32 else torch.int64)
        return int(as_int.min()) != torch.iinfo(as_int.dtype).min

    def clamp_range(self) -> tuple[float, float]:
        """``(lo, hi)`` that :meth:`constrain` clamps a plain scalar to (infinite: no limit)."""
        con, inf = self.type.constraint, math.inf
        if isinstance(con, Bounds):
            return self.lo, self.hi
        if isinstance(con, Sign):
            return (0.0, inf) if con.kind == "excitatory" else (-inf, 0.0)
        return -inf, inf

    def rows_shape(self, r0: int, r1: int) -> tuple[int, ...]:
        """Shape of the parameter's rows ``r0:r1`` (the whole shape for an unsplit parameter)."""
        return tuple(self.param.shape) if self.whole else (r1 - r0, *self.param.shape[1:])

    def round(self, q: Quire, seed: int, step: int, rounding: str | None = None) -> torch.Tensor:
        rounding = rounding or self.group["rounding"]
        u = self.uniform(seed, step) if rounding == "stochastic" else None
        return round_quire(q, self.storage, rounding, u)

    def constrain(self, w: torch.Tensor) -> torch.Tensor:
        """Project onto the grades and apply bounds / sign; ``w`` float64 of the parameter's shape (or
        a block of its leading rows)."""
        c = self.coeffs(w)
        c = self.type.project(c)
        con = self.type.constraint
        if isinstance(con, Bounds):
            c = c.clamp(self.lo, self.hi)
            c = self.type.project(c)
        elif isinstance(con, Sign):
            c = c.clamp(min=0.0) if con.kind == "excitatory" else c.clamp(max=0.0)
            c = c + 0.0  # no negative zeros
        return c.reshape(w.shape)

    def retract(self, r: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """Rotor retraction in float64: ``R exp(<R~ d>_2)`` renormalised; ``(..., dim)`` in and out."""
        alg = self.type.algebra
        b = alg.grade(alg.gp(alg.reverse(r), d), 2)
        out = alg.gp(r, alg.exp(b))
        return self.normalise(out)

    def normalise(self, r: torch.Tensor) -> torch.Tensor:
        alg = self.type.algebra
        r = self.type.project(r)
        s = alg.norm_sq(r).abs()
        if bool((s == 0).any()) or not bool(torch.isfinite(s).all()):
            raise ValueError(
                f"{self.name}: a rotor parameter has a zero or non-finite norm; "
                f"initialise rotors to unit even multivectors (e.g. the scalar 1)"
            )
        return r / s.sqrt().unsqueeze(-1)

    def snap(self, values: torch.Tensor) -> torch.Tensor:
        """Round float64 values to the nearest storage values and keep them in the type (rotors are
        normalised first); used once, when the parameter is registered."""
        if self.type.constraint == "rotor":
            values = self.normalise(self.coeffs(values)).reshape(self.param.shape)
        q = quire_from_float64(self.group["format"], self.to_q(values))
        return self.constrain(self.from_q(self.round(q, 0, 0, "nearest")))

    def write(self, w: torch.Tensor) -> None:
        with torch.no_grad():
            self.param.data.copy_(w.to(self.param.dtype))


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
        self.param_groups: list[dict] = []
        self._slots: list[_Slot] = []
        self._by_id: dict[int, _Slot] = {}
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
            slot = _Slot(p, len(self._slots), g, name)
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
        if g["rounding"] not in _ROUNDINGS:
            raise ValueError(f"{where}: rounding must be one of {_ROUNDINGS}, got {g['rounding']!r}")
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
    def _slot(self, param: torch.Tensor) -> _Slot:
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
            post: ``(K, M)`` or ``(M,)`` (e.g. postsynaptic spikes or errors over K = time x batch).
            pre: ``(K, *rest)`` or ``rest`` (e.g. presynaptic spikes or traces).
            scale: None, a scalar, or a tensor broadcastable to ``post`` (e.g. ``A_plus``, a reward
                per sample); rounded to the group's format, the three-factor product is exact.
        """
        slot = self._slot(param)
        if len(slot.qshape) != 2:
            raise ValueError(
                f"{slot.name}: accumulate_outer needs a parameter with at least 2 value "
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
                f"{slot.name}: accumulate_outer expects post (K, {slot.qshape[0]}) and pre "
                f"(K, {', '.join(map(str, rest))}), got post {tuple(post.shape)} and pre "
                f"{tuple(pre.shape)}"
            )
        pre = pre.reshape(pre.shape[0], -1)
        slot.touched = True
        if scale is None:  # few spikes on one side: add the terms one by one, note where they went
            hit = slot.quire.add_outer_events(post, pre)
            if hit is not None:
                if not slot.dense:
                    slot.note_events(*hit)
                return
        slot.quire.add_outer(post, pre, scale)
        slot.dense = True

    def clear(self) -> None:
        """Drop every pending contribution (like ``zero_grad``); quire windows stay allocated."""
        for slot in self._slots:
            slot.quire.clear()
            self._forget_events(slot)

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

    # ------------------------------------------------------------------ step
    @staticmethod
    @functools.lru_cache(maxsize=256)
    def _lr_parts(fmt: PositFormat, value: float) -> tuple[int, int]:
        """``round_fmt(value) = sig * 2**exp`` as Python ints (cached: schedules repeat values)."""
        sig, exp, _ = fmt.decompose(fmt.encode(torch.tensor([float(value)], dtype=torch.float64)))
        return int(sig[0]), int(exp[0])

    def effective_lr(self, group: dict) -> float:
        """The learning rate actually used: ``group['lr']`` rounded to the group's format."""
        return (
            float(group["format"].quantize(torch.tensor([float(group["lr"])], dtype=torch.float64))[0])
            if group["lr"]
            else 0.0
        )

    @staticmethod
    def _buffer_dtype(fmt: PositFormat) -> torch.dtype:
        return torch.float32 if fmt.fits_float32 else torch.float64

    def _momentum_rows(self, slot: _Slot, s: Quire, a: int, b: int) -> torch.Tensor:
        """``m <- round_fmt(beta m + S)`` on entries ``a:b``; returns the new ``m`` (float64, exact D)."""
        fmt: PositFormat = slot.group["format"]
        buf = slot.buffers["momentum_buffer"].view(-1)
        s.merge(
            scale_quire(
                quire_from_float64(fmt, buf[a:b].to(torch.float64)),
                *self._lr_parts(fmt, slot.group["momentum"]),
            )
        )
        m = fmt.decode(s.to_bits())
        buf[a:b] = m.to(buf.dtype)
        return m

    def _adam_rows(self, slot: _Slot, s: Quire, r0: int, r1: int, a: int, b: int) -> torch.Tensor:
        """Adam with moments in the group's format and second moments per grade block, on rows
        ``r0:r1`` (entries ``a:b``); returns the direction (float64, exact D).

        ``m <- round(b1 m + (1 - b1) S)`` exactly before the one rounding (posit products on limbs);
        ``v_k <- round(b2 v_k + (1 - b2) mean_{blades of grade k} S**2)`` (float64, deterministic);
        direction ``m_hat / (sqrt(v_hat) + eps)`` broadcast over each grade block, in float64.
        Per-block (not per-coefficient) second moments keep the update equivariant under rotors.
        Moments start at 0 (``b1 * 0`` and ``b2 * 0`` add exact zeros).
        """
        g = slot.group
        fmt: PositFormat = g["format"]
        b1, b2 = g["betas"]
        t = slot.step + 1
        exp_avg = slot.buffers["exp_avg"].view(-1)
        qm = scale_quire(s, *self._lr_parts(fmt, 1.0 - b1))
        qm.merge(
            scale_quire(quire_from_float64(fmt, exp_avg[a:b].to(torch.float64)), *self._lr_parts(fmt, b1))
        )
        m = fmt.decode(qm.to_bits())
        rows = slot.rows_shape(r0, r1)
        sf = slot.coeffs(s.to_float().reshape(rows))  # (..., dim)
        grades = slot.type.blade_grades.to(sf.device)
        blocks = list(slot.type.grades)
        sq = torch.stack([(sf[..., grades == k] ** 2).mean(-1) for k in blocks], -1)  # (..., nblocks)
        v_buf = slot.buffers["exp_avg_sq"]
        v_buf = v_buf if slot.whole else v_buf[r0:r1]
        v = fmt.quantize(b2 * v_buf.to(torch.float64) + (1.0 - b2) * sq)
        exp_avg[a:b] = m.to(exp_avg.dtype)
        v_buf.copy_(v.to(v_buf.dtype))
        block_of = torch.zeros(slot.type.dim, dtype=torch.long)
        for j, k in enumerate(blocks):
            block_of[slot.type.blade_grades == k] = j
        v_full = v[..., block_of.to(v.device)]
        m_c = slot.coeffs(m.reshape(rows))
        d = (m_c / (1 - b1**t)) / ((v_full / (1 - b2**t)).sqrt() + g["eps"])
        return d.reshape(-1)

    def _init_buffers(self, slot: _Slot) -> None:
        """Allocate momentum / Adam buffers (zeros) before a parameter's first step."""
        g = slot.group
        dtype = self._buffer_dtype(g["format"])
        dev = slot.param.device
        if g["momentum"] and "momentum_buffer" not in slot.buffers:
            slot.buffers["momentum_buffer"] = torch.zeros(slot.qshape, dtype=dtype, device=dev)
        if g["adam"] and "exp_avg" not in slot.buffers:
            slot.buffers["exp_avg"] = torch.zeros(slot.qshape, dtype=dtype, device=dev)
            lead = slot.coeffs(slot.param.detach()).shape[:-1]
            nblocks = len(slot.type.grades)
            slot.buffers["exp_avg_sq"] = torch.zeros(*lead, nblocks, dtype=dtype, device=dev)

    @staticmethod
    def _forget_events(slot: _Slot) -> None:
        slot.touched = slot.dense = False
        if slot.event_rows is not None:
            slot.event_rows.zero_()
            slot.event_cols.zero_()

    def _event_entries(self, slot: _Slot) -> torch.Tensor | None:
        """The flat entries ``step`` must visit when only event terms reached the parameter since
        the last step (few entries, every other one keeps its bits); None: visit every entry."""
        if slot.dense or slot.event_rows is None:
            return None
        index = slot.event_entries()
        if index.numel() * 2 > math.prod(slot.qshape) or not slot.fixed_when_unchanged():
            return None
        return index

    def _step_entries(self, slot: _Slot, index: torch.Tensor) -> None:
        """``step`` for one parameter over its flat entries ``index`` alone (same bits): nearest
        rounding to float storage through the compiled kernel (``quire_step_entries`` in
        neuro/_kernels/quire.c, an exact integer rounding), the rest (posit storage, stochastic
        rounding, the subnormal or overflowing results the kernel leaves) through
        :meth:`_round_rows`."""
        g = slot.group
        float_storage = not isinstance(slot.storage, PositFormat)
        kernel = compiled_kernels() if g["rounding"] == "nearest" and float_storage else None
        if kernel is not None and slot.param.device.type == "cpu":
            q = slot.quire
            if bool(q._nar.view(-1).index_select(0, index).any()):
                raise _nar_error(slot)
            sig, exp = self._lr_parts(g["format"], g["lr"]) if g["lr"] else (0, 0)
            q._limbs = q._limbs.contiguous()
            lo, hi = slot.clamp_range()
            left = torch.empty_like(index)
            w = slot.param.data
            count = kernel.quire_step_entries(
                index.data_ptr(), index.numel(), q._limbs.data_ptr(), q._limbs.shape[-1], q.offset,
                sig, exp, w.data_ptr(), int(w.dtype == torch.float64), lo, hi, left.data_ptr(),
            )  # fmt: skip
            if count == 0:
                q.clear_at(index[:0], rest_zero=True)
                self._forget_events(slot)
                slot.step += 1
                return
            index = left[:count]
        q = slot.quire.take(index)
        if bool(q.nar.any()):
            raise _nar_error(slot)
        lr = self._lr_parts(g["format"], g["lr"]) if g["lr"] else (0, 0)
        if q.limbs.shape[-1] == 0:
            q.widen(0, 1)
        flat = slot.param.data.view(-1)
        w = flat.index_select(0, index).to(torch.float64)
        u = slot.uniform_at(self.seed, slot.step, index) if g["rounding"] == "stochastic" else None
        new = self._round_rows(slot, w, q.limbs, q.offset, None, lr, u)
        flat.index_copy_(0, index, slot.constrain(new).to(flat.dtype))
        slot.quire.clear_at(index, rest_zero=True)
        self._forget_events(slot)
        slot.step += 1

    @torch.no_grad()
    def step(self) -> None:
        """Apply every parameter's accumulated contributions (see the module docstring), then clear.

        Works through each parameter in blocks of leading rows (:func:`step_block_rows`),
        so its temporary memory does not grow with the tensor. Parameters with no contribution
        since the last step are left untouched (their step counters do not advance). Raises
        FloatingPointError, leaving that parameter unchanged, when its exact sum is NaR (a NaN/inf
        contribution or a sum beyond the quire's range).
        """
        import torch.distributed as dist

        distributed = dist.is_available() and dist.is_initialized()
        if distributed:
            self._all_reduce()
        for slot in self._slots:
            if not slot.touched:
                continue
            index = None if distributed else self._event_entries(slot)
            if index is not None:
                self._step_entries(slot, index)
                continue
            q = slot.quire
            if bool(q.nar.any()):
                raise _nar_error(slot)
            g = slot.group
            self._init_buffers(slot)
            lr = self._lr_parts(g["format"], g["lr"]) if g["lr"] else (0, 0)
            if q.limbs.shape[-1] == 0:  # only zero contributions since the last step: an exact 0
                q.widen(0, 1)
            limbs = q.limbs.reshape(-1, q.limbs.shape[-1])  # (entries, L), normalised
            general = bool(g["momentum"] or g["adam"]) or slot.type.constraint == "rotor" or not _FAST
            block = step_block_rows(slot.rows, slot.per_row, limbs.shape[-1], general)
            for r0 in range(0, slot.rows, block):
                self._apply_rows(slot, limbs, q.offset, lr, r0, min(slot.rows, r0 + block))
            q.clear()
            self._forget_events(slot)
            slot.step += 1

    def _apply_rows(
        self, slot: _Slot, limbs: torch.Tensor, offset: int, lr: tuple[int, int], r0: int, r1: int
    ) -> None:
        """Update rows ``r0:r1`` (of the quire's leading axis) of one parameter: ``limbs`` are the
        whole quire's, ``(entries, L)``; ``lr = (sig, e)``."""
        g = slot.group
        fmt: PositFormat = g["format"]
        a, b = r0 * slot.per_row, r1 * slot.per_row
        pview = slot.param.data if slot.whole else slot.param.data[r0:r1]
        w = pview.to(torch.float64).reshape(-1)
        stochastic = g["rounding"] == "stochastic"
        u = slot.uniform(self.seed, slot.step, a, b) if stochastic else None
        rows = limbs[a:b]
        d = None  # the direction as exact float64 values (momentum / Adam), else read from the limbs
        if g["momentum"] or g["adam"]:
            s = _rows_quire(fmt, rows, offset)
            d = (
                self._momentum_rows(slot, s, a, b)
                if g["momentum"]
                else self._adam_rows(slot, s, r0, r1, a, b)
            )
        if slot.type.constraint == "rotor":
            lr_d = scale_quire(self._exact_rows(fmt, rows, offset, d), *lr)
            shape = slot.rows_shape(r0, r1)
            r_new = slot.retract(slot.coeffs(w.reshape(shape)), slot.coeffs(lr_d.to_float().reshape(shape)))
            new = round_quire(quire_from_float64(fmt, r_new.reshape(-1)), slot.storage, g["rounding"], u)
        else:
            new = self._round_rows(slot, w, rows, offset, d, lr, u)
        pview.copy_(slot.constrain(new.reshape(pview.shape)).to(pview.dtype))

    @staticmethod
    def _exact_rows(fmt: PositFormat, rows: torch.Tensor, offset: int, d: torch.Tensor | None) -> Quire:
        """The exact direction of some entries: their quire rows, or the float64 values ``d``."""
        return _rows_quire(fmt, rows, offset) if d is None else quire_from_float64(fmt, d)

    def _round_rows(
        self,
        slot: _Slot,
        w: torch.Tensor,
        rows: torch.Tensor,
        offset: int,
        d: torch.Tensor | None,
        lr: tuple[int, int],
        u: torch.Tensor | None,
    ) -> torch.Tensor:
        """``w + lr * D`` rounded once to storage (float64 ``(entries,)``): the fast path of
        :mod:`neuro.engine.fast` where it decides, the exact path for the other entries."""
        g = slot.group
        fmt: PositFormat = g["format"]
        top_bit = fmt.quire_integer_bits + 31
        if isinstance(slot.storage, PositFormat):
            top_bit = min(top_bit, slot.storage.quire_integer_bits + 31)
        lr_f = lr[0] * 2.0 ** lr[1]
        new, ok = None, None
        if _FAST and slot.storage != "float64":
            est = estimate_limbs(rows, offset, lr_f, top_bit) if d is None else estimate_float(d, lr_f)
            if est is not None:
                if u is None:
                    new, ok = round_nearest_fast(w, *est, slot.storage, top_bit)
                else:
                    new, ok = round_stochastic_fast(w, *est, slot.storage, top_bit, u)
                if bool(ok.all()):
                    return new
        sel = None if ok is None else (~ok).nonzero().squeeze(1)
        if sel is not None:
            w, rows, u = w[sel], rows[sel], None if u is None else u[sel]
            d = None if d is None else d[sel]
        lr_d = scale_quire(self._exact_rows(fmt, rows, offset, d), *lr)
        if u is None:
            exact = round_sum_nearest(w, lr_d, slot.storage)
        else:
            total = quire_from_float64(fmt, w)
            total.merge(lr_d)
            exact = round_quire(total, slot.storage, "stochastic", u)
        if sel is None:
            return exact
        new[sel] = exact
        return new

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
        """Everything needed to resume bit-exactly: tensors and JSON-able values only.

        ``{"version", "seed", "state": {index: {"step", "touched", "quire_limbs", "quire_offset",
        "quire_nar", buffers...}}, "param_groups": [{..., "params": [indices], "format": {...},
        "type": {...}}]}``. ``step`` is also the stochastic-rounding counter. Use
        :func:`flatten_state_dict` to get ``(dict of tensors, JSON metadata)`` for safetensors.
        """
        state: dict[int, dict] = {}
        for slot in self._slots:
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
            state[slot.index] = entry
        groups = []
        for g in self.param_groups:
            groups.append(
                {
                    "params": [self._by_id[id(p)].index for p in g["params"]],
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
            )
        return {"version": _STATE_VERSION, "seed": self.seed, "state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a state written by :meth:`state_dict` into an engine built on the same parameters
        (same groups, shapes, formats and types). Group options (lr, rounding, ...) are restored."""
        if state_dict.get("version") != _STATE_VERSION:
            raise ValueError(
                f"UpdateEngine.load_state_dict: unsupported state version {state_dict.get('version')}"
            )
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"UpdateEngine.load_state_dict: {len(groups)} groups saved, engine has "
                f"{len(self.param_groups)}"
            )
        for gi, (saved, g) in enumerate(zip(groups, self.param_groups)):
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
        self.seed = int(state_dict["seed"])
        for saved, g in zip(groups, self.param_groups):
            for key in ("lr", "rounding", "momentum", "adam", "eps"):
                g[key] = saved[key]
            g["betas"] = tuple(saved["betas"])
            for idx, p in zip(saved["params"], g["params"]):
                slot = self._by_id[id(p)]
                saved_state = state_dict["state"]
                entry = saved_state[idx] if idx in saved_state else saved_state[str(idx)]
                limbs = entry["quire_limbs"].to(device=p.device, dtype=torch.int64)
                if tuple(limbs.shape[:-1]) != tuple(slot.qshape):
                    raise ValueError(
                        f"{slot.name}: saved quire has shape {tuple(limbs.shape[:-1])}, "
                        f"expected {slot.qshape}"
                    )
                slot.quire = Quire.from_limbs(
                    g["format"],
                    limbs,
                    int(entry["quire_offset"]),
                    entry["quire_nar"].to(device=p.device, dtype=torch.bool),
                )
                slot.step = int(entry["step"])
                self._forget_events(slot)
                slot.touched = slot.dense = bool(entry["touched"])
                slot.buffers = {
                    k: v.clone().to(p.device)
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
