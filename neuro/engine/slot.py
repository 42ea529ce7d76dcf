"""One parameter as the engine holds it: its quire, storage format, type, counters and buffers.

A :class:`Slot` knows how to keep its parameter inside its declared type (storage values,
grades, bounds, sign, unit rotors), which entries the event terms reached since the last step,
and the stochastic-rounding numbers of each step.  :mod:`neuro.engine.step` applies a step to
it; :class:`~neuro.engine.UpdateEngine` owns the slots.
"""

from __future__ import annotations

import math

import torch

from neuro.engine.params import Bounds, ParamType, Sign
from neuro.numerics import POSIT32, PositFormat, Quire, counter_uniform, next_value, round_quire, stream_key
from neuro.numerics.formats import storage_name

__all__ = ["Slot", "rotor_norm_bound"]


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
    x = torch.tensor([value], dtype=torch.float64)
    q = Quire.from_float64(storage if isinstance(storage, PositFormat) else POSIT32, x)
    c = round_quire(q, storage)
    bad = (c < x) if upward else (c > x)
    if bool(bad.any()):
        c = next_value(c, storage, torch.tensor([1 if upward else -1]))
        if bool(((c < x) if upward else (c > x)).any()):
            raise ValueError(f"bound {value} lies outside the range of storage {storage_name(storage)}")
    return float(c[0])



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
    one = torch.ones(1, dtype=torch.float64)
    below = float(next_value(one, storage, torch.tensor([-1]))[0])
    h = (1.0 - below) / (2.0 if rounding == "nearest" else 1.0)
    blades = max(1, algebra.dim // 2)
    d = math.sqrt(blades) * h
    return 2 * d + d * d + 1e-12



class Slot:
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

    def forget_events(self) -> None:
        """Mark the slot as untouched since the step and forget the noted rows and columns."""
        self.touched = self.dense = False
        if self.event_rows is not None:
            self.event_rows.zero_()
            self.event_cols.zero_()

    def step_entries(self) -> torch.Tensor | None:
        """The flat entries ``step`` must visit when only event terms reached the parameter since
        the last step (few entries, every other one keeps its bits); None: visit every entry."""
        if self.dense or self.event_rows is None:
            return None
        index = self.event_entries()
        if index.numel() * 2 > math.prod(self.qshape) or not self.fixed_when_unchanged():
            return None
        return index

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
        q = Quire.from_float64(self.group["format"], self.to_q(values))
        return self.constrain(self.from_q(self.round(q, 0, 0, "nearest")))

    def write(self, w: torch.Tensor) -> None:
        with torch.no_grad():
            self.param.data.copy_(w.to(self.param.dtype))


    def init_buffers(self) -> None:
        """Allocate momentum / Adam buffers (zeros) before the parameter's first step, in the
        group's format's float dtype (float32 when every value fits)."""
        g = self.group
        dtype = torch.float32 if g["format"].fits_float32 else torch.float64
        dev = self.param.device
        if g["momentum"] and "momentum_buffer" not in self.buffers:
            self.buffers["momentum_buffer"] = torch.zeros(self.qshape, dtype=dtype, device=dev)
        if g["adam"] and "exp_avg" not in self.buffers:
            self.buffers["exp_avg"] = torch.zeros(self.qshape, dtype=dtype, device=dev)
            lead = self.coeffs(self.param.detach()).shape[:-1]
            nblocks = len(self.type.grades)
            self.buffers["exp_avg_sq"] = torch.zeros(*lead, nblocks, dtype=dtype, device=dev)

    def nar_error(self) -> FloatingPointError:
        """The error ``step`` raises when this parameter's accumulated sum is NaR."""
        return FloatingPointError(
            f"{self.name}: the accumulated update is NaR (a NaN/inf contribution, or a sum beyond the "
            f"{self.quire.fmt.name} quire's range); the parameter was left unchanged"
        )


def snap_to_type(values: torch.Tensor, ptype: ParamType, fmt: PositFormat = POSIT32) -> torch.Tensor:
    """``values`` as registration with an engine leaves a parameter of type ``ptype``: the nearest
    storage values, projected onto the grades, inside the bounds or sign (rotors normalised).  A
    tensor of ``values``' dtype; registering it again changes no bit.  (The quire that loads the
    float64 values holds them exactly whatever its format ``fmt``.)"""
    slot = Slot(values, 0, {"type": ptype, "format": fmt, "rounding": "nearest"}, "values")
    return slot.snap(values.detach().to(torch.float64)).to(values.dtype)
