"""An exact fixed-point accumulator (quire) for a whole tensor of sums.

Every term a quire receives is a product of values of its posit format (or a single value); the
quire adds it *exactly* and rounds only when read out (``to_bits``).  Because integer addition is
associative, the result does not depend on the order or grouping of the terms, nor on how they are
split between quires that are later merged.

Representation
    Each accumulator is an integer ``sum_i limbs[..., i] * 2**(32 * (offset + i))`` held in an int64
    tensor of shape ``(*shape, L)``: 32-bit digits ("limbs") stored in int64 so that up to 2**30
    additions can be made before carries must be propagated.  The limb window ``[offset,
    offset + L)`` is shared by the whole tensor and widened on demand, never truncated: memory is
    proportional to the range of bits actually in use, not to the full quire width.  Normalised
    limbs lie in ``[0, 2**32)`` except the top one, which is signed (two's complement).

Range
    The top of the quire is the format's standard quire (1 sign, 31 carry guard, ``2 * max_scale``
    integer bits): a sum reaching ``2**(quire_integer_bits + 31)`` in magnitude becomes NaR, never a
    silent wrap.  There is no fixed bottom: every bit of every product is kept, also for the
    three-factor products that ``add_outer(..., scale=...)`` forms (a standard quire would have to
    drop the lowest bits of those).

Fast reductions
    ``add_outer`` computes ``sum_k post[k]^T pre[k]`` without materialising the ``(K, M, N)``
    products: each factor's exact fixed-point form is cut into a few digit planes of at most ``c``
    bits; a float64 matmul of two planes is exact as long as every partial sum stays below 2**53,
    which holds by the choice of ``c`` and of the chunk of ``K``; the integer result is folded into
    the limbs.  A spike train (0/1) is one plane, so STDP and gradient updates cost a handful of
    GEMMs.  Real x real factors span more bits than one GEMM can hold, but mostly because of a few
    values far below the rest: each factor is cut at a planned bit (``_plan_split``), the bits at or
    above the cuts make one GEMM per chunk of K, and the rare values with bits below a cut are
    added through a sparse path (``index_add`` of exact products, in digit planes) -- the result
    is the same exact sum.
"""

from __future__ import annotations

import bisect
import math

import torch

from neuro.numerics._threads import gemm_threads, one_thread, single_threaded
from neuro.numerics.posit import PositFormat

__all__ = ["Quire"]

LIMB_BITS = 32
_LIMB_MASK = (1 << LIMB_BITS) - 1
_EXACT_BITS = 53  # float64 holds every integer below 2**53 exactly
_MAX_PENDING = 1 << 30  # folds allowed between carry propagations (each adds < 2**32 per limb)
_STATS_BLOCK = 1 << 16  # elements per block of the range scan
_PIPE_ELEMS = 1 << 19  # elements per factor in one row block of the add_outer pipeline (one GEMM call)
_SPLIT_BLOCK = 1 << 16  # elements per piece when rounding and cutting planes in one go
_SAMPLE = 1 << 13  # elements per factor sampled to plan a dense/sparse split of add_outer
_SPARSE_COST = 400  # cost of one product of add_outer's sparse path, in GEMM multiply-adds
_SPARSE_ELEMS = 1 << 22  # products held at once by add_outer's sparse path
_CALL_COST = 1 << 21  # cost of one more GEMM call and fold (thread hand-offs), in multiply-adds


def _bit_length(x: torch.Tensor) -> torch.Tensor:
    """Exact bit length of non-negative int64 values (any size below 2**63)."""
    bl = torch.frexp(x.to(torch.float64))[1].to(torch.int64)  # may be one too high after rounding
    too_high = (bl > 0) & ((x >> (bl - 1).clamp(min=0)) == 0)
    return bl - too_high.to(torch.int64)


class _IntPlanes:
    """A tensor of exact values ``sig * 2**exp`` cut into digit planes of ``width`` bits.

    ``value == sum_p digits(p) * 2**(lo + width * p)`` with integer digits ``|d| < 2**width``.
    """

    def __init__(self, sig: torch.Tensor, exp: torch.Tensor):
        self.neg = sig < 0
        self.mag = sig.abs()
        nonzero = self.mag != 0
        self.empty = not bool(nonzero.any())
        if self.empty:
            self.lo, self.hi = 0, 0
            return
        top = exp + _bit_length(self.mag)
        self.exp = exp
        self.lo = int(exp[nonzero].min())
        self.hi = int(top[nonzero].max())

    @property
    def range_bits(self) -> int:
        return self.hi - self.lo

    @single_threaded
    def planes(self, width: int) -> list[tuple[int, torch.Tensor]]:
        """Non-empty planes as ``(exponent, float64 digits)``, lowest first."""
        if self.empty:
            return []
        out = []
        mask = (1 << width) - 1
        count = -(-self.range_bits // width)
        for p in range(count):
            base = self.lo + width * p
            s = self.exp - base
            up = s.clamp(0, width)
            down = (-s).clamp(0, 63)
            kept = self.mag & ((torch.ones_like(up) << (width - up)) - 1)
            digit = torch.where(s >= 0, kept << up, (self.mag >> down) & mask)
            if not bool(digit.any()):
                continue
            digit = torch.where(self.neg, -digit, digit)
            out.append((base, digit.to(torch.float64)))
        return out


class _FloatPlanes:
    """A float64 tensor of exact values with at most ``sig_bits`` significant bits each, cut into
    digit planes: ``value == sum_p digits(p) * 2**(lo + width * p)``, ``|digit| <= 2**width``.

    Digits are computed with float arithmetic that is exact here: scaling by powers of two,
    ``floor``, and subtractions whose result is representable.
    """

    def __init__(self, values: torch.Tensor, sig_bits: int):
        self.values = values
        mag = values.abs()
        top = mag.amax() if values.numel() else torch.zeros((), dtype=values.dtype)
        self.empty = not bool(top > 0)
        if self.empty:
            self.lo, self.hi = 0, 0
            return
        smallest = torch.where(mag > 0, mag, torch.inf).amin()
        self.hi = int(torch.frexp(top)[1])  # |value| < 2**hi
        self.lo = int(torch.frexp(smallest)[1]) - sig_bits  # every set bit is at or above lo

    @property
    def range_bits(self) -> int:
        return self.hi - self.lo

    @single_threaded
    def planes(self, width: int) -> list[tuple[int, torch.Tensor]]:
        if self.empty:
            return []
        if self.range_bits > 1000:  # the scaled values would overflow float64: go through ints
            mant, ex = torch.frexp(self.values)
            sig = (mant * 2.0**_EXACT_BITS).to(torch.int64)
            return _IntPlanes(sig, ex.to(torch.int64) - _EXACT_BITS).planes(width)
        scaled = self.values
        shift = -self.lo
        while shift:  # scale by 2**-lo in steps that cannot overflow 2**+-1023
            step = max(-1000, min(1000, shift))
            scaled = scaled * 2.0**step
            shift -= step
        count = -(-self.range_bits // width)
        if count == 1:
            return [(self.lo, scaled)]
        out = []
        step = float(2.0**width)
        rest = scaled
        for p in range(count - 1):
            upper = torch.floor(rest / step)
            digit = rest - upper * step
            if bool(digit.any()):
                out.append((self.lo + width * p, digit))
            rest = upper
        if bool(rest.any()):
            out.append((self.lo + width * (count - 1), rest))
        return out


@single_threaded
def _abs_range(x: torch.Tensor) -> tuple[float, float, bool]:
    """``(max |x|, smallest non-zero |x| (inf when none), any inf/NaN)`` of a float tensor.

    One read-only scan over the integer view in cache-sized blocks (no temporaries the size of
    ``x``): for non-negative floats the order of the bit patterns is the order of the values.
    """
    flat = x.reshape(-1)
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.to(torch.float32)
    if flat.dtype == torch.float32:
        itype, mask, inf_bits = torch.int32, 0x7FFFFFFF, 0x7F800000
    else:
        flat = flat.to(torch.float64)
        itype, mask, inf_bits = torch.int64, (1 << 63) - 1, 0x7FF0000000000000
    ints = flat.view(itype)
    top, low = -1, mask
    step = _STATS_BLOCK if flat.device.type == "cpu" else max(1, flat.numel())
    for start in range(0, flat.numel(), step):
        m = ints[start : start + step] & mask
        m -= 1  # zero -> -1; the smallest non-zero is then the smallest non-negative
        mn, mx = (int(v) for v in torch.aminmax(m))
        top = max(top, mx)
        if mn < 0:
            mn = int((m & mask).amin())  # -1 -> mask
        low = min(low, mn)
    bad = top + 1 >= inf_bits
    ftype = flat.dtype

    def value(bits: int) -> float:
        return float(torch.tensor([bits], dtype=itype).view(ftype)[0])

    biggest = value(top + 1) if top >= 0 else 0.0
    smallest = value(low + 1) if low < mask else math.inf
    return biggest, smallest, bad


def _lowest_bit(v: float) -> int:
    """Exponent of the lowest set bit of a positive finite float."""
    mant, ex = math.frexp(v)
    sig = int(mant * 2.0**_EXACT_BITS)
    return ex - _EXACT_BITS + ((sig & -sig).bit_length() - 1)


def _scale_pow2(x: torch.Tensor, e: int) -> torch.Tensor:
    """``x * 2**e`` (exact for the values used here), in steps that stay inside float64."""
    while e:
        step = max(-1000, min(1000, e))
        x = x * 2.0**step
        e -= step
    return x


class Quire:
    """Exact accumulators, one per element of ``shape``, for sums of products of ``fmt`` values.

    Args:
        fmt: the posit format whose values are accumulated and to which ``to_bits`` rounds.
        shape: shape of the tensor of accumulators (e.g. a weight's shape).
        device: torch device of the limbs.
    """

    def __init__(self, fmt: PositFormat, shape: tuple[int, ...] | torch.Size, device=None):
        if not isinstance(fmt, PositFormat):
            raise ValueError(f"Quire: fmt must be a PositFormat, got {type(fmt).__name__}")
        self.fmt = fmt
        self.shape = torch.Size(shape)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._limbs = torch.zeros(*self.shape, 0, dtype=torch.int64, device=self.device)
        self._offset = 0
        self._nar = torch.zeros(self.shape, dtype=torch.bool, device=self.device)
        self._pending = 0
        self._top_bit = fmt.quire_integer_bits + 31  # |value| must stay below 2**_top_bit

    # ------------------------------------------------------------------------ state access
    @property
    def offset(self) -> int:
        """Index of the lowest limb: limb ``i`` weighs ``2**(32 * (offset + i))``."""
        return self._offset

    @property
    def limbs(self) -> torch.Tensor:
        """Normalised integer state, int64 ``(*shape, L)`` (a view; do not modify)."""
        self.normalize()
        return self._limbs

    @property
    def nar(self) -> torch.Tensor:
        """Bool mask of accumulators that are NaR (sticky until ``clear``)."""
        self.normalize()
        return self._nar

    @property
    def nbytes(self) -> int:
        """Bytes of accumulator state currently allocated."""
        return self._limbs.numel() * 8 + self._nar.numel()

    @classmethod
    def from_limbs(
        cls, fmt: PositFormat, limbs: torch.Tensor, offset: int = 0, nar: torch.Tensor | None = None
    ) -> Quire:
        """Rebuild a quire from ``limbs`` (int64 ``(*shape, L)``) as returned by ``q.limbs``."""
        if not isinstance(limbs, torch.Tensor) or limbs.dtype != torch.int64 or limbs.dim() < 1:
            raise ValueError(
                "Quire.from_limbs: limbs must be an int64 tensor of shape (*shape, L), got "
                f"{getattr(limbs, 'dtype', type(limbs).__name__)} "
                f"{tuple(getattr(limbs, 'shape', ()))}"
            )
        q = cls(fmt, limbs.shape[:-1], device=limbs.device)
        q._limbs = limbs.clone()
        q._offset = int(offset)
        if nar is not None:
            if nar.shape != q.shape:
                raise ValueError(
                    f"Quire.from_limbs: nar has shape {tuple(nar.shape)}, expected {tuple(q.shape)}"
                )
            q._nar = nar.to(torch.bool).clone()
        q._pending = _MAX_PENDING  # unknown history: normalise before use
        q.normalize()
        return q

    def clone(self) -> Quire:
        q = Quire(self.fmt, self.shape, self.device)
        q._limbs, q._offset, q._nar = self._limbs.clone(), self._offset, self._nar.clone()
        q._pending = self._pending
        return q

    def clear(self) -> None:
        """Reset every accumulator to 0 (and clear NaR), keeping the allocated window."""
        self._limbs.zero_()
        self._nar.zero_()
        self._pending = 0

    # ------------------------------------------------------------------------ window and carries
    def widen(self, lo: int, hi: int) -> None:
        """Make the window cover limbs ``[lo, hi)`` (absolute limb indices)."""
        length = self._limbs.shape[-1]
        if length == 0:
            self._offset = lo
            self._limbs = torch.zeros(*self.shape, hi - lo, dtype=torch.int64, device=self.device)
            return
        below = max(0, self._offset - lo)
        above = max(0, hi - (self._offset + length))
        if below or above:
            parts = []
            if below:
                parts.append(torch.zeros(*self.shape, below, dtype=torch.int64, device=self.device))
            parts.append(self._limbs)
            if above:
                parts.append(torch.zeros(*self.shape, above, dtype=torch.int64, device=self.device))
            self._limbs = torch.cat(parts, dim=-1)
            self._offset -= below

    @single_threaded
    def trim(self) -> None:
        """Shrink the window to the smallest one that holds every value (a canonical form:
        equal values give equal ``(offset, limbs)`` whatever the history)."""
        self.normalize()
        limbs = self._limbs
        length = limbs.shape[-1]
        if length == 0 or limbs.numel() == 0:
            self._limbs = limbs[..., :0].clone()
            self._offset = 0
            return
        nonzero_cols = (limbs != 0).reshape(-1, length).any(0)
        if not bool(nonzero_cols.any()):
            self._limbs = limbs[..., :0].clone()
            self._offset = 0
            return
        lo = int(nonzero_cols.nonzero()[0])
        hi = length
        # Drop top limbs that are pure sign extension of the limb below.
        while hi - lo > 1:
            top, below = limbs[..., hi - 1], limbs[..., hi - 2]
            positive_ext = (top == 0) & (below < (1 << 31))
            negative_ext = (top == -1) & (below >= (1 << 31))
            if not bool((positive_ext | negative_ext).all()):
                break
            limbs = limbs.clone() if hi == length else limbs
            limbs[..., hi - 2] = torch.where(negative_ext, below - (1 << LIMB_BITS), below)
            hi -= 1
        self._limbs = limbs[..., lo:hi].clone()
        self._offset += lo

    @single_threaded
    def normalize(self) -> None:
        """Propagate carries so every limb but the top lies in [0, 2**32); detect overflow."""
        if self._pending == 0:
            return
        limbs = self._limbs
        length = limbs.shape[-1]
        kernel = compiled_kernels() if limbs.device.type == "cpu" and limbs.is_contiguous() else None
        if kernel is not None:
            outside = kernel.quire_normalize(limbs.data_ptr(), limbs.numel() // max(1, length), length)
        else:
            for i in range(length - 1):
                carry = limbs[..., i] >> LIMB_BITS
                limbs[..., i] &= _LIMB_MASK
                limbs[..., i + 1] += carry
            outside = True
        while (
            outside
            and length
            and bool(((limbs[..., -1] >= 1 << 31) | (limbs[..., -1] < -(1 << 31))).any())
        ):
            self.widen(self._offset, self._offset + length + 1)
            limbs = self._limbs
            carry = limbs[..., -2] >> LIMB_BITS
            limbs[..., -2] &= _LIMB_MASK
            limbs[..., -1] += carry
            length += 1
        self._pending = 0
        self._check_overflow()

    @single_threaded
    def _check_overflow(self) -> None:
        """Turn accumulators whose value left [-2**top, 2**top) into NaR (limbs zeroed)."""
        top = self._top_bit
        length = self._limbs.shape[-1]
        if length == 0 or LIMB_BITS * (self._offset + length) - 1 <= top:
            return  # the top limb is signed 32-bit, so |value| < 2**(32*(offset+L)-1) <= 2**top
        j = top // LIMB_BITS - self._offset
        if j < 0:
            self.widen(top // LIMB_BITS, self._offset + length)
            return self._check_overflow()
        shift = top % LIMB_BITS
        limbs = self._limbs
        negative = limbs[..., -1] < 0
        fill = torch.where(negative, _LIMB_MASK, 0)
        ok = torch.ones(self.shape, dtype=torch.bool, device=self.device)
        for i in range(j + 1, length - 1):
            ok &= limbs[..., i] == fill
        if j < length - 1:
            ok &= limbs[..., -1] == torch.where(negative, -1, 0)
            ok &= (limbs[..., j] >> shift) == torch.where(negative, _LIMB_MASK >> shift, 0)
        else:
            ok &= (limbs[..., j] >> shift) == torch.where(negative, -1, 0)
        bad = ~ok
        if bool(bad.any()):
            self._nar |= bad
            self._limbs[bad] = 0

    @single_threaded
    def _fold(self, value: torch.Tensor, exponent: int) -> None:
        """Add ``value * 2**exponent`` exactly; ``value`` float64 or int64 integers, |v| < 2**53."""
        v = value.to(torch.int64) if value.dtype != torch.int64 else value
        base, shift = divmod(exponent, LIMB_BITS)
        self.widen(base, base + 4)
        i = base - self._offset
        low = (v & ((1 << (LIMB_BITS - shift)) - 1)) << shift
        rest = v >> (LIMB_BITS - shift)
        self._limbs[..., i] += low
        self._limbs[..., i + 1] += rest & _LIMB_MASK
        self._limbs[..., i + 2] += rest >> LIMB_BITS
        self._pending += 1
        if self._pending >= _MAX_PENDING:
            self.normalize()

    # ------------------------------------------------------------------------ adding terms
    def _as_float(self, x, what: str) -> torch.Tensor:
        """Validate an input: a float tensor, or a bool tensor (spikes, exactly 0/1)."""
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x, dtype=torch.float64)
        if not (x.dtype.is_floating_point or x.dtype == torch.bool):
            raise ValueError(
                f"Quire.{what}: expected a floating-point (or bool spike) tensor, got dtype {x.dtype}"
            )
        return x.to(self.device)

    def _check_tail(self, shape: torch.Size, what: str) -> None:
        n = len(self.shape)
        if len(shape) < n or tuple(shape[len(shape) - n :]) != tuple(self.shape):
            raise ValueError(
                f"Quire.{what}: the trailing dimensions of the input {tuple(shape)} must equal "
                f"the quire shape {tuple(self.shape)}"
            )

    @property
    def _sig_bits(self) -> int:
        """Significant bits of the widest value of the format (hidden bit included)."""
        return self.fmt.max_fraction_bits + 1

    def _quantized(self, x: torch.Tensor, tail: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(round(x) as float64 with NaR -> 0, NaR mask over the last `tail` dims, sig bits)``.

        Bool tensors are spike trains: exactly 0/1, no rounding needed (1 significant bit).
        """
        tail_shape = x.shape[x.dim() - tail :]
        if x.dtype == torch.bool:
            return x.to(torch.float64), torch.zeros(tail_shape, dtype=torch.bool, device=x.device), 1
        q = self.fmt.quantize(x)
        nar = torch.isnan(q.reshape(-1, *tail_shape).sum(0))
        if bool(nar.any()):
            q = torch.nan_to_num(q, nan=0.0)
        return q, nar, self._sig_bits

    @single_threaded
    def _products(self, a: torch.Tensor, b: torch.Tensor | None, tail: int):
        """Exact ``round(a) * round(b)`` as digit planes, and the NaR mask over the last dims.

        Float64 holds the products exactly when the two significands have at most 53 bits
        together and the products stay inside float64's exponent range (every named format but
        posit32); otherwise they go through integer significands.
        """
        qa, nar, bits_a = self._quantized(a, tail)
        if b is None:
            return _FloatPlanes(qa, bits_a), nar
        qb, nar_b, bits_b = self._quantized(b, tail)
        nar = nar | nar_b
        fmt = self.fmt
        if bits_a + bits_b <= _EXACT_BITS and 2 * fmt.max_scale < 1000 and 2 * fmt.ulp_min > -1000:
            return _FloatPlanes(qa * qb, bits_a + bits_b), nar
        shape = torch.broadcast_shapes(qa.shape, qb.shape)
        sa, ea, _ = self.fmt.decompose(self.fmt.encode(qa).expand(shape))
        sb, eb, _ = self.fmt.decompose(self.fmt.encode(qb).expand(shape))
        return _IntPlanes(sa * sb, ea + eb), nar

    @single_threaded
    def _add_planes(self, planes, nar: torch.Tensor) -> None:
        """Add the sum over the leading dims of planes of values shaped ``(..., *shape)``."""
        self._nar |= nar
        if planes.empty:
            return
        values = planes.values if isinstance(planes, _FloatPlanes) else planes.mag
        k = values.numel() // max(1, self.shape.numel())
        width = _EXACT_BITS - max(1, math.ceil(math.log2(max(k, 2))))
        for base, digits in planes.planes(width):
            self._fold(digits.reshape(-1, *self.shape).sum(0), base)

    def add(self, x: torch.Tensor) -> None:
        """Add ``round(x)`` exactly; dims of ``x`` before the quire shape are summed."""
        x = self._as_float(x, "add")
        self._check_tail(x.shape, "add")
        self._add_planes(*self._products(x, None, len(self.shape)))

    def fma(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Add ``round(a) * round(b)`` exactly (broadcast; leading dims beyond the shape summed)."""
        a, b = self._as_float(a, "fma"), self._as_float(b, "fma")
        try:
            shape = torch.broadcast_shapes(a.shape, b.shape)
        except RuntimeError as err:
            raise ValueError(
                f"Quire.fma: shapes {tuple(a.shape)} and {tuple(b.shape)} do not broadcast"
            ) from err
        self._check_tail(shape, "fma")
        self._add_planes(*self._products(a.expand(shape), b.expand(shape), len(self.shape)))

    def add_outer(
        self, post: torch.Tensor, pre: torch.Tensor, scale: torch.Tensor | float | None = None
    ) -> None:
        """Add ``sum_k round(scale) * round(post[k, :])^T round(pre[k, :])`` exactly.

        Args:
            post: ``(K, M)`` (or ``(M,)`` for K = 1), e.g. postsynaptic errors or spikes.
            pre: ``(K, N)`` (or ``(N,)``), e.g. presynaptic spikes or traces.
            scale: optional scalar, or a tensor broadcastable to ``post`` (per-sample or per-row
                factors such as a learning rate or ``A_plus``); rounded to the format.
        The quire's shape must be ``(M, N)``.
        """
        post, pre = self._as_float(post, "add_outer"), self._as_float(pre, "add_outer")
        if post.dim() == 1:
            post = post.unsqueeze(0)
        if pre.dim() == 1:
            pre = pre.unsqueeze(0)
        if (
            len(self.shape) != 2
            or post.dim() != 2
            or pre.dim() != 2
            or post.shape[0] != pre.shape[0]
            or (post.shape[1], pre.shape[1]) != tuple(self.shape)
        ):
            raise ValueError(
                f"Quire.add_outer: expected post (K, M) and pre (K, N) with quire shape (M, N); "
                f"got post {tuple(post.shape)}, pre {tuple(pre.shape)}, quire {tuple(self.shape)}"
            )
        if scale is None and self.device.type == "cpu" and self._outer_fast(post, pre):
            return
        if scale is None:
            a, nar_a = self._products(post, None, 1)
        else:
            scale_t = self._as_float(scale, "add_outer")
            try:
                torch.broadcast_shapes(scale_t.shape, post.shape)
            except RuntimeError as err:
                raise ValueError(
                    f"Quire.add_outer: scale of shape {tuple(scale_t.shape)} does not broadcast "
                    f"to post {tuple(post.shape)}"
                ) from err
            if scale_t.numel() == 1 and self.device.type == "cpu" and self._outer_scaled(post, pre, scale_t):
                return
            a, nar_a = self._products(post, scale_t.expand(post.shape), 1)
        b, nar_b = self._products(pre, None, 1)
        self._nar |= nar_a[:, None] | nar_b[None, :]
        self._outer_planes(a, b, post.shape[0])

    @single_threaded
    def add_outer_events(self, post: torch.Tensor, pre: torch.Tensor, budget: int | None = None):
        """``add_outer(post, pre)`` term by term, for rows ``k`` with few non-zeros on one side.

        In each row ``k`` the sparser side is enumerated: every ``post[k, m] != 0`` with the whole
        ``pre[k, :]`` (a row of the result), or every ``pre[k, n] != 0`` with ``post[k, :]`` (a
        column); each product is added exactly at its own place (integer significands,
        ``index_add_`` into the limbs).  Spike trains times traces (STDP) reach a few rows and
        columns per update interval, so this costs in proportion to those terms instead of to the
        ``M x N`` accumulators.

        Args:
            post: ``(K, M)``; pre: ``(K, N)`` (bool spikes or floats).
            budget: the most terms worth enumerating (default ``2 * M * N`` with the compiled
                kernel, ``M * N // 2`` without).
        Returns:
            ``(rows, cols)``: the rows and the columns that received terms (long, possibly
            repeated); or None, with nothing added, when the terms exceed the budget or a factor
            is not finite (then use :meth:`add_outer`).  Formats have at most 32 bits, so a
            significand has at most 30 bits and a product of two fits an int64.
        """
        post, pre = self._as_float(post, "add_outer_events"), self._as_float(pre, "add_outer_events")
        m, n = self.shape if len(self.shape) == 2 else (-1, -1)
        if (
            post.dim() != 2
            or pre.dim() != 2
            or post.shape[0] != pre.shape[0]
            or (post.shape[1], pre.shape[1]) != (m, n)
        ):
            raise ValueError(
                f"Quire.add_outer_events: expected post (K, M) and pre (K, N) with quire shape "
                f"(M, N); got post {tuple(post.shape)}, pre {tuple(pre.shape)}, quire {tuple(self.shape)}"
            )
        if budget is None:  # the compiled kernel adds a term in a few ns: worth it well past M x N
            budget = 2 * m * n if self.device.type == "cpu" and compiled_kernels() is not None else m * n // 2
        nz_post, nz_pre = post != 0, pre != 0
        as_rows = nz_post.sum(1) * n  # terms of row k, enumerated by its post entries
        as_cols = nz_pre.sum(1) * m
        by_rows = as_rows <= as_cols
        if int(torch.where(by_rows, as_rows, as_cols).sum()) > budget:
            return None
        k_r, rows = (nz_post & by_rows.unsqueeze(1)).nonzero(as_tuple=True)
        k_c, cols = (nz_pre & ~by_rows.unsqueeze(1)).nonzero(as_tuple=True)
        if rows.numel() + cols.numel() == 0:
            return rows, cols
        # one factor per event (E,), the whole other row per event, flattened (E_r * N + E_c * M,)
        e_r, events = rows.numel(), rows.numel() + cols.numel()
        q = self.fmt.quantize(
            torch.cat([post[k_r, rows], pre[k_c, cols], pre[k_r].reshape(-1), post[k_c].reshape(-1)]).to(
                torch.float64
            )
        )
        kernel = compiled_kernels() if self.device.type == "cpu" else None
        done = (
            self._events_compiled(kernel, q, rows, cols, e_r, events)
            if kernel is not None
            else self._events_torch(q, rows, cols, e_r, events)
        )
        if not done:
            return None
        self._pending += events  # per limb: at most one part per event, each < 2**32
        if self._pending >= _MAX_PENDING:
            self.normalize()
        return rows, cols

    def _events_compiled(self, kernel, q, rows, cols, e_r: int, events: int) -> bool:
        """The terms of :meth:`add_outer_events` through ``neuro/_kernels/quire.c``."""
        m, n = self.shape
        one, many_r, many_c = q[:events], q[events : events + e_r * n], q[events + e_r * n :]
        rows, cols = rows.contiguous(), cols.contiguous()
        span = torch.tensor([1, 0], dtype=torch.int64)  # lowest, highest limb (empty: lo > hi)
        parts = ((e_r, one, rows, many_r, n, n, 1), (events - e_r, one[e_r:], cols, many_c, m, 1, n))
        count = 0
        for e, o, _, mny, width, _, _ in parts:
            got = kernel.quire_event_range(e, o.data_ptr(), mny.data_ptr(), width, span.data_ptr())
            if got < 0:
                return False  # inf/NaN: the general path marks NaR
            count += got
        if count:
            lo, hi = span.tolist()
            self.widen(lo, hi + 3)
            self._limbs = self._limbs.contiguous()
            limbs, length = self._limbs, self._limbs.shape[-1]
            for e, o, idx, mny, width, s_idx, s_j in parts:
                kernel.quire_event_fold(
                    e, o.data_ptr(), idx.data_ptr(), mny.data_ptr(), width, s_idx, s_j,
                    limbs.data_ptr(), length, self._offset,
                )  # fmt: skip
        return True

    def _events_torch(self, q, rows, cols, e_r: int, events: int) -> bool:
        """The terms of :meth:`add_outer_events` with torch operations (no compiler, or not CPU)."""
        if not bool(torch.isfinite(q).all()):
            return False
        m, n = self.shape
        mant, exp = torch.frexp(q)
        sig = torch.ldexp(mant, torch.tensor(self._sig_bits)).to(torch.int64)
        exp = exp.to(torch.int64) - self._sig_bits
        sig_one, sig_many, exp_one, exp_many = sig[:events], sig[events:], exp[:events], exp[events:]
        width = torch.cat([torch.full((e_r,), n), torch.full((events - e_r,), m)]).to(self.device)
        value = sig_many * torch.repeat_interleave(sig_one, width, output_size=sig_many.numel())
        exponent = exp_many + torch.repeat_interleave(exp_one, width, output_size=sig_many.numel())
        arange_n, arange_m = torch.arange(n, device=self.device), torch.arange(m, device=self.device)
        place = torch.cat(
            [
                (rows * n).unsqueeze(1).add(arange_n).reshape(-1),
                (arange_m * n).add(cols.unsqueeze(1)).reshape(-1),
            ]
        )
        keep = value != 0
        if bool(keep.any()):
            self._fold_each(value[keep], exponent[keep], place[keep])
        return True

    def _fold_each(self, value: torch.Tensor, exponent: torch.Tensor, place: torch.Tensor) -> None:
        """Add ``value[i] * 2**exponent[i]`` at flat accumulator ``place[i]`` (1-D int64 tensors,
        ``|value| < 2**62``); a three-limb form of :meth:`_fold` with one exponent per term."""
        base = exponent >> 5  # floor(exponent / 32)
        shift = exponent & (LIMB_BITS - 1)
        lo, hi = (int(v) for v in torch.aminmax(base))
        self.widen(lo, hi + 3)
        self._limbs = self._limbs.contiguous()
        length = self._limbs.shape[-1]
        keep = LIMB_BITS - shift
        low = (value & ((torch.ones_like(value) << keep) - 1)) << shift
        rest = value >> keep
        at = place * length + (base - self._offset)
        limbs = self._limbs.view(-1)
        parts = torch.cat([low, rest & _LIMB_MASK, rest >> LIMB_BITS])
        limbs.index_add_(0, torch.cat([at, at + 1, at + 2]), parts)

    def take(self, index: torch.Tensor) -> Quire:
        """The accumulators at flat positions ``index`` (long ``(T,)``) as a new normalised 1-D quire."""
        q = Quire(self.fmt, (index.numel(),), self.device)
        length = self._limbs.shape[-1]
        if length == 0:
            return q
        q._limbs = self._limbs.reshape(-1, length).index_select(0, index)
        q._offset, q._nar = self._offset, self._nar.reshape(-1).index_select(0, index)
        q._pending = max(1, self._pending)
        q.normalize()
        return q

    def clear_at(self, index: torch.Tensor, rest_zero: bool = False) -> None:
        """Reset the accumulators at flat positions ``index`` to 0 (NaR cleared). ``rest_zero``: the
        caller knows every other accumulator is 0, so no carries are pending any more."""
        length = self._limbs.shape[-1]
        if length:
            self._limbs.view(-1, length).index_fill_(0, index, 0)
        self._nar.view(-1).index_fill_(0, index, False)
        if rest_zero:
            self._pending = 0

    @single_threaded
    def _outer_scaled(self, post: torch.Tensor, pre: torch.Tensor, scale: torch.Tensor) -> bool:
        """``add_outer`` with one finite scale ``s``: ``round(s) * sum_k post[k]^T pre[k]``, the sum
        made by :meth:`_outer_fast` in a scratch quire whose limbs are then multiplied exactly by
        ``round(s) = sig * 2**e`` and added.  Returns False (nothing done) where the general path
        must run (a non-finite scale or factor)."""
        fmt = self.fmt
        s = scale.reshape(1).to(torch.float64)
        if not bool(torch.isfinite(s).all()):
            return False
        scratch = Quire(fmt, self.shape, self.device)
        if not scratch._outer_fast(post, pre):
            return False
        sig, exp, _ = fmt.decompose(fmt.encode(s))
        sig, exp = int(sig[0]), int(exp[0])
        scratch.normalize()
        length = scratch._limbs.shape[-1]
        if sig == 0 or length == 0:
            return True
        low = abs(sig) & -abs(sig)  # lowest set bit: move the trailing zeros into the exponent
        exp += low.bit_length() - 1
        magnitude = abs(sig) // low
        quot, rem = divmod(exp, LIMB_BITS)
        # multiply by magnitude * 2**rem with factors <= 2**31, dropping each input once it is used
        factors = [magnitude << rem] if magnitude << rem <= 1 << 31 else [magnitude, 1 << rem]
        for factor in factors:
            if factor != 1:
                scratch._limbs = _times(scratch._limbs, factor)
        if sig < 0:
            scratch._limbs.neg_()
        scratch._offset += quot
        scratch._pending += 1  # negated limbs are not normalised
        scratch.trim()  # drop the carry limbs _times adds where they only extend the sign
        self.merge(scratch)  # so this quire's window widens only as far as the values need
        return True

    def _outer_factor(self, x: torch.Tensor):
        """How :meth:`_outer_fast` reads one factor: ``(kind, lo, hi)`` with every set bit of every
        rounded value in ``[lo, hi)``; kind ``"copy"`` (values already exact) or ``"quantize"``;
        ``None`` for an all-zero factor; ``False`` when it holds inf/NaN (general path)."""
        if x.dtype == torch.bool:
            return ("copy", 0, 1) if bool(x.any()) else None
        biggest, smallest, bad = _abs_range(x)
        if bad:
            return False
        if biggest == 0:
            return None
        fmt = self.fmt
        q_big, q_small = fmt.quantize(torch.tensor([biggest, smallest], dtype=torch.float64)).tolist()
        hi = math.frexp(q_big)[1]  # rounding is monotone: every |round(x)| <= round(max |x|)
        if biggest == smallest:  # one magnitude: values are 0 and +-round(biggest)
            return ("copy" if q_big == biggest else "quantize"), _lowest_bit(q_big), hi
        # Every non-zero |round(x)| is a pattern >= round(smallest), and the exponent of a
        # pattern's last bit never decreases as the pattern grows.
        _, exp, _ = fmt.decompose(fmt.encode(torch.tensor([q_small], dtype=torch.float64)))
        return "quantize", int(exp[0]), hi

    @single_threaded
    def _outer_fast(self, post: torch.Tensor, pre: torch.Tensor) -> bool:
        """``add_outer`` without scale for finite inputs, pipelined over blocks of rows of K.

        Each block of rows of both factors is rounded (or copied) into a float64 buffer, cut into
        digit planes without rescaling (a GEMM is exact at any power-of-two scale as long as it
        stays inside float64's range, which the formats' exponent range guarantees) and multiplied
        into one float64 accumulator per plane pair with ``addmm``; the accumulators are folded
        into the limbs once per chunk of K that ``_plan_widths`` allows.  When ``_plan_split``
        finds it cheaper, each factor instead keeps only its multiples of a cut ``2**cut`` in the
        buffer (one plane) and its remainders, rare non-zeros, go to :meth:`_flush_sparse`.
        Nothing the size of the inputs is allocated.  Returns False (nothing done) for inputs the
        general path must see.
        """
        fa = self._outer_factor(post)
        if fa is False:
            return False
        fb = self._outer_factor(pre)
        if fb is False:
            return False
        if fa is None or fb is None:
            return True
        fmt = self.fmt
        if not (fmt.max_scale < 300 and fmt.ulp_min > -300):
            return False  # keep float64 products, sums and plane cuts far from under/overflow
        (kind_a, lo_a, hi_a), (kind_b, lo_b, hi_b) = fa, fb
        k = post.shape[0]
        m, n = self.shape
        width_a, width_b, chunk = _plan_widths(hi_a - lo_a, hi_b - lo_b, k, m, n)
        count_a = -(-(hi_a - lo_a) // width_a)
        count_b = -(-(hi_b - lo_b) // width_b)
        split = None
        if count_a * count_b > 1:
            split = _plan_split(
                fa, self._sample_low_bits(post, kind_a), fb, self._sample_low_bits(pre, kind_b), k, m, n
            )
        if split is not None:  # one dense plane per factor, the rare low bits go the sparse way
            cut_a, cut_b, chunk = split
            split_a, split_b = cut_a > lo_a, cut_b > lo_b
            lo_a, lo_b, count_a, count_b = max(lo_a, cut_a), max(lo_b, cut_b), 1, 1
            width_a, width_b = hi_a - lo_a, hi_b - lo_b
            sparse_a, sparse_b = [], []
        rows = max(1, _PIPE_ELEMS // max(m, n))
        rows = min(k, chunk, 1 << (rows.bit_length() - 1))
        post, pre = post.contiguous(), pre.contiguous()
        # Planes of a factor side by side in one buffer: one GEMM gives every plane pair.
        buf_a = torch.empty(rows, count_a * m, dtype=torch.float64, device=self.device)
        buf_b = torch.empty(rows, count_b * n, dtype=torch.float64, device=self.device)
        acc = torch.zeros(count_a * m, count_b * n, dtype=torch.float64, device=self.device)
        done = 0  # rows accumulated since the last fold
        for start in range(0, k, rows):
            stop = min(k, start + rows)
            with one_thread():
                if split is not None and split_a:
                    da = self._pipe_split(
                        post[start:stop], buf_a[: stop - start], kind_a, lo_a, hi_a, start, sparse_a
                    )
                else:
                    da = self._pipe_planes(
                        post[start:stop], buf_a[: stop - start], kind_a, lo_a, width_a, count_a
                    )
                if split is not None and split_b:
                    db = self._pipe_split(
                        pre[start:stop], buf_b[: stop - start], kind_b, lo_b, hi_b, start, sparse_b
                    )
                else:
                    db = self._pipe_planes(
                        pre[start:stop], buf_b[: stop - start], kind_b, lo_b, width_b, count_b
                    )
            with gemm_threads():
                acc.addmm_(da.T, db)
            done += stop - start
            if split is not None:  # bounded memory: the sparse terms can be added at any time
                self._flush_sparse(sparse_a, pre, kind_b, None, False, stop == k)
                self._flush_sparse(sparse_b, post, kind_a, lo_a if split_a else None, True, stop == k)
            if done >= chunk or stop == k:
                for i in range(count_a):
                    for j in range(count_b):
                        e = lo_a + width_a * i + lo_b + width_b * j
                        block = acc[i * m : (i + 1) * m, j * n : (j + 1) * n]
                        self._fold(_scale_pow2(block, -e), e)
                acc.zero_()
                done = 0
        return True

    @single_threaded
    def _flush_sparse(
        self, found: list, other, kind: str, cut: int | None, transpose: bool, last: bool
    ) -> None:
        """Add the sparse terms of the remainders in ``found`` (emptied), once they hold
        ``_SPARSE_ELEMS`` products or on the ``last`` call.  With ``A = A_hi + A_lo`` and
        ``B = B_hi + B_lo``: ``A^T B = A_hi^T B_hi + A_lo^T B + A_hi^T B_lo``; ``found`` holds
        ``A_lo`` (``other`` = B, whole) or ``B_lo`` (``other`` = A, its part at or above ``cut``)."""
        count = sum(len(f[0]) for f in found)
        if not count or (not last and count * other.shape[1] < _SPARSE_ELEMS):
            return
        ks, cols, vals = (torch.cat(t) for t in zip(*found))
        found.clear()
        rows = self._rounded_rows(other, ks, kind, cut)
        self._fold_sparse(cols, vals, rows, transpose)

    @single_threaded
    def _sample_low_bits(self, x: torch.Tensor, kind: str) -> list[int]:
        """Sorted exponents of the lowest set bit of the rounded non-zero values of a strided
        sample of ``x`` (at most ``_SAMPLE`` elements): what :func:`_plan_split` estimates from."""
        flat = x.reshape(-1)
        step = max(1, flat.numel() // _SAMPLE)
        while math.gcd(step, x.shape[-1]) > 1:  # visit every column
            step += 1
        sample = flat[::step]
        v = self.fmt.quantize(sample) if kind == "quantize" else sample.to(torch.float64)
        low = torch.sort(_low_bits(v[v != 0])).values
        return [len(sample), *low.tolist()]

    def _pipe_split(self, x, buf, kind, cut, hi, row0, found: list) -> torch.Tensor:
        """Round (or copy) rows ``x`` (R, D) of a factor, write their multiples of ``2**cut``
        (round to nearest) into ``buf`` (R, D) and append the non-zero remainders to ``found`` as
        ``(row indices + row0, column indices, float64 values)``.  Every rounded value is below
        ``2**hi`` and ``hi - cut <= 50``, so ``(v + C) - C`` rounds exactly at ``2**cut``; the
        remainder keeps a subset of the value's bits (exact in the value's float type)."""
        fmt = self.fmt
        d = x.shape[1]
        step = max(1, _SPLIT_BLOCK // max(d, 1))
        for r0 in range(0, x.shape[0], step):
            r1 = min(x.shape[0], r0 + step)
            piece = x[r0:r1].reshape(-1)
            v = fmt._quantize_block(piece) if kind == "quantize" else piece
            single = v.dtype == torch.float32 and hi <= cut + 22 and -140 < cut < 100
            v = v if single else v.to(torch.float64)
            c = 1.5 * 2.0 ** (cut + (23 if single else 52))
            upper = v + c
            upper -= c
            buf[r0:r1].view(-1).copy_(upper)
            low = (v - upper).view(r1 - r0, d)
            hit = torch.nonzero(low.abs().amax(1)).squeeze(1)  # rows with a remainder (few)
            if hit.numel():
                part = low[hit]
                i, j = torch.nonzero(part, as_tuple=True)
                found.append((hit[i] + (row0 + r0), j, part[i, j].to(torch.float64)))
        return buf

    def _rounded_rows(self, x: torch.Tensor, ks: torch.Tensor, kind: str, cut: int | None) -> torch.Tensor:
        """Rows ``ks`` of the rounded factor ``x`` as float64 (E, D); with ``cut``, only their
        multiples of ``2**cut`` as :meth:`_pipe_split` keeps them."""
        uniq, inverse = torch.unique(ks, return_inverse=True)
        rows = x[uniq]
        v = self.fmt.quantize(rows) if kind == "quantize" else rows.to(torch.float64)
        if cut is not None:
            c = 1.5 * 2.0 ** (cut + 52)
            v = (v + c) - c
        return v[inverse]

    def _fold_sparse(
        self, idx: torch.Tensor, vals: torch.Tensor, rows: torch.Tensor, transpose: bool
    ) -> None:
        """Add ``vals[e] * rows[e, :]`` to accumulator row ``idx[e]`` (column when ``transpose``)
        for every e, exactly: digit planes of both sides sized so that every sum of digit products
        a row receives stays below 2**53."""
        m, n = self.shape
        count = int(torch.bincount(idx).max())
        budget = _EXACT_BITS - max(0, math.ceil(math.log2(count)))
        a = _FloatPlanes(vals, self._sig_bits)
        b = _FloatPlanes(rows, self._sig_bits)
        if a.empty or b.empty:
            return
        wa = min(range(1, budget), key=lambda w: -(-a.range_bits // w) * -(-b.range_bits // (budget - w)))
        for ea, da in a.planes(wa):
            for eb, db in b.planes(budget - wa):
                acc = torch.zeros(
                    n if transpose else m, m if transpose else n, dtype=torch.float64, device=self.device
                )
                acc.index_add_(0, idx, da[:, None] * db)
                self._fold(acc.T if transpose else acc, ea + eb)

    def _pipe_planes(self, x, buf, kind, lo, width, count) -> torch.Tensor:
        """Round (or copy) rows ``x`` (R, D) of a factor and cut them into ``count`` float64
        planes, written side by side into ``buf`` (R, count * D) and returned:
        ``value == sum_p plane_p``, ``plane_p`` a multiple of ``2**(lo + width*p)`` whose
        magnitude is at most ``2**(lo + width*(p+1))`` (digits of at most ``width`` bits).  Work
        runs on cache-sized pieces; each value has at most the format's significant bits, so its
        upper and lower parts are exact in float32 too when the format fits float32."""
        if count == 1:
            if kind == "quantize":
                self.fmt._quantize_into(x, buf)
            elif x.dtype == torch.float64:
                return x
            else:
                buf.copy_(x)
            return buf
        fmt = self.fmt
        d = x.shape[1]
        cuts = [lo + width * (p + 1) for p in range(count - 1)]
        hi = lo + width * count  # an upper bound of the factor's top bit
        # Round-to-nearest at a cut with the float unit, (v + C) - C, C = 1.5 * 2**(cut + mant):
        # exact when |v| < 2**(cut + mant - 1); the digit below it has at most `width` bits.
        single = (
            fmt._single_ok(x)
            and fmt.fits_float32
            and width <= 24
            and all(hi <= c + 22 and -120 < c < 100 for c in cuts)
        )
        mant = 23 if single else 52
        magic = all(hi <= c + mant - 1 for c in cuts)
        step = max(1, _SPLIT_BLOCK // max(d, 1))
        for r0 in range(0, x.shape[0], step):
            r1 = min(x.shape[0], r0 + step)
            piece = x[r0:r1].reshape(-1)
            v = fmt._quantize_block(piece) if kind == "quantize" else piece
            v = v.to(torch.float32 if single else torch.float64).view(r1 - r0, d)
            for p, cut in enumerate(cuts):
                if magic:
                    c = 1.5 * 2.0 ** (cut + mant)
                    upper = v + c
                    upper -= c
                else:  # toward zero: both parts keep a subset of the bits of v
                    upper = v * 2.0**-cut
                    upper.trunc_()
                    upper *= 2.0**cut
                torch.sub(v, upper, out=buf[r0:r1, p * d : (p + 1) * d])
                v = upper
            buf[r0:r1, (count - 1) * d :].copy_(v)
        return buf

    def _outer_planes(self, a, b, k: int) -> None:
        if a.empty or b.empty:
            return
        m, n = self.shape
        width_a, width_b, chunk = _plan_widths(a.range_bits, b.range_bits, k, m, n)
        planes_a = a.planes(width_a)
        planes_b = b.planes(width_b)
        for start in range(0, k, chunk):
            stop = min(k, start + chunk)
            for ea, da in planes_a:
                da_t = da[start:stop].T
                for eb, db in planes_b:
                    with gemm_threads():
                        product = da_t @ db[start:stop]
                    self._fold(product, ea + eb)

    @single_threaded
    def merge(self, other: Quire) -> None:
        """Add another quire of the same format and shape into this one, exactly."""
        if not isinstance(other, Quire) or other.fmt != self.fmt or other.shape != self.shape:
            raise ValueError(
                "Quire.merge: expected a quire of format "
                f"{self.fmt.name} and shape {tuple(self.shape)}, got "
                f"{getattr(getattr(other, 'fmt', None), 'name', type(other).__name__)} "
                f"{tuple(getattr(other, 'shape', ()))}"
            )
        other.normalize()
        self.normalize()
        length = other._limbs.shape[-1]
        if length:
            self.widen(other._offset, other._offset + length)
            i = other._offset - self._offset
            self._limbs[..., i : i + length] += other._limbs
            self._pending += 1
        self._nar |= other._nar
        self.normalize()

    # ------------------------------------------------------------------------ reading out
    @single_threaded
    def _top_bits(self, width: int):
        """Sign, exponent of the leading bit, top ``width`` bits and sticky bit of each value."""
        self.normalize()
        limbs = self._limbs
        length = limbs.shape[-1]
        negative = limbs[..., -1] < 0 if length else torch.zeros(self.shape, dtype=torch.bool)
        if length == 0:
            zero = torch.ones(self.shape, dtype=torch.bool, device=self.device)
            z = torch.zeros(self.shape, dtype=torch.int64, device=self.device)
            return negative, z, z, zero.logical_not(), zero
        mag = torch.where(negative.unsqueeze(-1), -limbs, limbs)
        for i in range(length - 1):  # re-normalise the negated digits
            carry = mag[..., i] >> LIMB_BITS
            mag[..., i] &= _LIMB_MASK
            mag[..., i + 1] += carry
        nonzero = mag != 0
        is_zero = ~nonzero.any(-1)
        idx = torch.arange(length, device=self.device)
        h = torch.where(nonzero, idx, -1).amax(-1).clamp(min=0)
        padded = torch.cat([torch.zeros(*self.shape, 2, dtype=torch.int64, device=self.device), mag], -1)

        def limb(j: torch.Tensor) -> torch.Tensor:
            return padded.gather(-1, (j + 2).unsqueeze(-1)).squeeze(-1)

        a, b, c = limb(h), limb(h - 1), limb(h - 2)
        bl = _bit_length(a).clamp(min=1)
        sh_b = width - LIMB_BITS - bl
        part_b = torch.where(sh_b >= 0, b << sh_b.clamp(min=0), b >> (-sh_b).clamp(0, 63))
        sh_c = bl + 2 * LIMB_BITS - width  # right shift of c, >= 3
        part_c = c >> sh_c.clamp(max=63)
        sig = (a << (width - bl)) + part_b + part_c
        one = torch.ones_like(b)
        sticky = (sh_b < 0) & ((b & ((one << (-sh_b).clamp(0, 62)) - 1)) != 0)
        sticky |= (c & ((one << sh_c.clamp(max=62)) - 1)) != 0
        below = torch.cumsum(nonzero.to(torch.int64), -1)
        below = torch.cat([torch.zeros(*self.shape, 1, dtype=torch.int64, device=self.device), below], -1)
        sticky |= below.gather(-1, (h - 2).clamp(min=0).unsqueeze(-1)).squeeze(-1) > 0
        scale = LIMB_BITS * (self._offset + h) + bl - 1
        return negative, scale, sig, sticky, is_zero

    @single_threaded
    def to_bits(self) -> torch.Tensor:
        """Round every accumulator once to the format: int64 patterns of shape ``shape``."""
        negative, scale, sig, sticky, is_zero = self._top_bits(_EXACT_BITS)
        bits = self.fmt.round_parts(negative, scale, sig, sticky)
        bits = torch.where(is_zero, torch.zeros_like(bits), bits)
        return torch.where(self._nar, torch.full_like(bits, self.fmt.nar), bits)

    @single_threaded
    def to_float(self) -> torch.Tensor:
        """Each accumulator's exact value rounded to the nearest float64 (NaR -> nan)."""
        negative, scale, sig, sticky, is_zero = self._top_bits(_EXACT_BITS + 2)
        # Results below 2**-1022 are subnormal: they keep fewer bits, so round at a higher bit.
        extra = (-1022 - scale).clamp(0, 60)
        shift = 2 + extra
        one = torch.ones_like(sig)
        mant = sig >> shift
        rest = sig & ((one << shift) - 1)
        half = one << (shift - 1)
        up = (rest > half) | ((rest == half) & (sticky | ((mant & 1) == 1)))
        mant = mant + up.to(torch.int64)
        value = torch.ldexp(mant.to(torch.float64), (scale - (_EXACT_BITS - 1) + extra).to(torch.float64))
        value = torch.where(negative, -value, value)
        value = torch.where(is_zero, torch.zeros_like(value), value)
        return torch.where(self._nar, torch.full_like(value, float("nan")), value)

    def __repr__(self) -> str:
        return (
            f"Quire({self.fmt.name}, shape={tuple(self.shape)}, limbs=[{self._offset}, "
            f"{self._offset + self._limbs.shape[-1]}))"
        )


_KERNEL: list = []  # [ctypes library or None], loaded on first use
_USE_KERNEL = True  # tests switch the compiled kernels off to compare them with the torch paths


def compiled_kernels():
    """``neuro/_kernels/quire.c`` through ctypes (compiled on first use), or None: no compiler
    (then one warning, and the quire runs its torch paths: same results, slower)."""
    if not _USE_KERNEL:
        return None
    if not _KERNEL:
        import ctypes
        import warnings

        from neuro import _kernels

        lib = _kernels.load("quire")
        if lib is None:
            warnings.warn(
                f"neuro.numerics.quire: the compiled quire kernels are unavailable "
                f"({_kernels.error('quire')}); event terms and carries take the slower torch paths",
                RuntimeWarning,
                stacklevel=3,
            )
        else:
            i64, ptr = ctypes.c_int64, ctypes.c_void_p
            lib.quire_event_range.argtypes = [i64, ptr, ptr, i64, ptr]
            lib.quire_event_range.restype = i64
            lib.quire_event_fold.argtypes = [i64, ptr, ptr, ptr, i64, i64, i64, ptr, i64, i64]
            lib.quire_event_fold.restype = None
            lib.quire_normalize.argtypes = [ptr, i64, i64]
            lib.quire_normalize.restype = i64
            f64 = ctypes.c_double
            lib.quire_step_entries.argtypes = [ptr, i64, ptr, i64, i64, i64, i64, ptr, i64, f64, f64, ptr]
            lib.quire_step_entries.restype = i64
        _KERNEL.append(lib)
    return _KERNEL[0]


def _times(limbs: torch.Tensor, factor: int) -> torch.Tensor:
    """Normalised limbs ``(*shape, L)`` times an integer ``0 <= factor <= 2**31``, normalised, as
    ``(*shape, L + 2)`` (every partial product and carry stays below 2**63)."""
    zeros = torch.zeros(*limbs.shape[:-1], 2, dtype=torch.int64, device=limbs.device)
    out = torch.cat([limbs, zeros], -1).mul_(factor)
    for i in range(out.shape[-1] - 1):
        out[..., i + 1] += out[..., i] >> LIMB_BITS
        out[..., i] &= _LIMB_MASK
    return out


def _low_bits(v: torch.Tensor) -> torch.Tensor:
    """Exponent of the lowest set bit of each non-zero float64 value (int64)."""
    mant, ex = torch.frexp(v)
    sig = (mant * 2.0**_EXACT_BITS).to(torch.int64).abs()
    lsb = torch.frexp((sig & -sig).to(torch.float64))[1].to(torch.int64) - 1
    return ex.to(torch.int64) - _EXACT_BITS + lsb


def _plan_split(fa, low_a: list[int], fb, low_b: list[int], k: int, m: int, n: int):
    """Cuts ``(cut_a, cut_b, chunk)`` that make ``add_outer`` one dense GEMM per chunk of K on
    the bits of each factor at or above its cut, the few values with bits below a cut going
    through the sparse path, or None when :func:`_plan_widths`'s digit planes are cheaper.

    ``low_*`` is ``[sample size, sorted lowest-bit exponents of the sample's non-zeros]``.
    Exactness: ``(hi_a - cut_a) + (hi_b - cut_b) + log2(chunk) <= 53``.  The cost model is
    :func:`_plan_widths`'s plus ``_SPARSE_COST`` per product of a sparse term, with the share of
    values below a cut estimated from the sample.
    """
    (_, lo_a, hi_a), (_, lo_b, hi_b) = fa, fb
    log_k = max(0, math.ceil(math.log2(max(k, 1))))

    def below(low: list[int], cut: int) -> float:
        return bisect.bisect_left(low, cut, 1) - 1 if cut > low[1] else 0

    wa, wb, chunk = _plan_widths(hi_a - lo_a, hi_b - lo_b, k, m, n)
    pa, pb = -(-(hi_a - lo_a) // wa), -(-(hi_b - lo_b) // wb)
    pipe = k * m * (40 + 10 * pa) + k * n * (40 + 10 * pb)  # rounding, then cutting planes
    chunks = -(-k // chunk)
    best = (pa * pb * (k * m * n + chunks * m * n * 200) + chunks * _CALL_COST + pipe, None)
    for log_chunk in sorted({min(log_k, c) for c in (8, 10, 12, 16)}):
        budget = _EXACT_BITS - log_chunk
        for width_a in range(1, min(budget, 51)):
            cut_a, cut_b = max(lo_a, hi_a - width_a), max(lo_b, hi_b - min(budget - width_a, 50))
            share_a = below(low_a, cut_a) / low_a[0] if len(low_a) > 1 else 0.0
            share_b = below(low_b, cut_b) / low_b[0] if len(low_b) > 1 else 0.0
            cost = (
                k * m * n * (1 + _SPARSE_COST * (share_a + share_b))
                + -(-k // (1 << log_chunk)) * (m * n * 200 + _CALL_COST)
                + k * m * (60 if cut_a > lo_a else 40)
                + k * n * (60 if cut_b > lo_b else 40)
            )
            if cost < best[0]:
                best = (cost, (cut_a, cut_b, 1 << log_chunk))
    return best[1]


def _plan_widths(range_a: int, range_b: int, k: int, m: int, n: int) -> tuple[int, int, int]:
    """Digit widths for the two factors and the chunk of K that keep every GEMM exact and cheap.

    Exactness: ``width_a + width_b + ceil(log2(chunk)) <= 53``.  Cost model (relative units): a
    GEMM costs ``chunk * m * n`` multiply-adds per plane pair and each fold ~200 per output entry.
    """
    best = None
    log_k = max(0, math.ceil(math.log2(max(k, 1))))
    for log_chunk in sorted({log_k, min(log_k, 20), min(log_k, 16), min(log_k, 12), min(log_k, 8)}):
        budget = _EXACT_BITS - log_chunk
        chunk = 1 << log_chunk
        n_chunks = -(-k // chunk)
        for wa in range(1, budget):
            wb = budget - wa
            pa = -(-range_a // wa)
            pb = -(-range_b // wb)
            cost = pa * pb * (k * m * n + n_chunks * m * n * 200) + (pa * k * m + pb * k * n) * 10
            if best is None or cost < best[0]:
                best = (cost, min(wa, range_a), min(wb, range_b), chunk)
    _, wa, wb, chunk = best
    return max(wa, 1), max(wb, 1), chunk
