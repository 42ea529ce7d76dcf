"""An exact fixed-point accumulator (quire) for a whole tensor of sums: the core.

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
    integer bits): a sum reaching ``2**fmt.quire_top_bit`` in magnitude becomes NaR, never a
    silent wrap.  There is no fixed bottom: every bit of every product is kept, also for the
    three-factor products that ``add_outer(..., scale=...)`` forms (a standard quire would have to
    drop the lowest bits of those).

This module holds the state, loading (:meth:`Quire.add`, :meth:`Quire.fma`,
:meth:`Quire.from_float64`), exact scaling (:meth:`Quire.scaled`), merging and reading out; the
outer-product reductions live in :mod:`neuro.numerics.outer` (GEMMs of digit planes) and
:mod:`neuro.numerics.events` (few terms, one by one), and rounding to a storage format in
:mod:`neuro.numerics.rounding`.
"""

from __future__ import annotations

import math

import torch

from neuro.numerics import events, outer
from neuro.numerics.kernels import compiled_kernels
from neuro.numerics.planes import EXACT_BITS, as_factor, bit_length, products
from neuro.numerics.posit import PositFormat
from neuro.numerics.threads import single_threaded

__all__ = ["Quire", "LIMB_BITS", "MAX_PENDING"]

LIMB_BITS = 32
_LIMB_MASK = (1 << LIMB_BITS) - 1
#: Folds allowed between carry propagations (each adds < 2**32 per limb).
MAX_PENDING = 1 << 30


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
        self._top_bit = fmt.quire_top_bit  # |value| must stay below 2**_top_bit

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
        q._pending = MAX_PENDING  # unknown history: normalise before use
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
    def fold(self, value: torch.Tensor, exponent: int) -> None:
        """Add ``value * 2**exponent`` exactly: ``value`` float64 or int64 integers of the quire's
        shape (or broadcast to it), ``|value| < 2**53``."""
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
        if self._pending >= MAX_PENDING:
            self.normalize()

    def fold_at(self, value: torch.Tensor, exponent: torch.Tensor, place: torch.Tensor) -> None:
        """Add ``value[i] * 2**exponent[i]`` at flat accumulator ``place[i]`` (1-D int64 tensors,
        ``|value| < 2**62``); a three-limb form of :meth:`fold` with one exponent per term.  Each
        accumulator may receive many terms: count them with :meth:`count_additions`."""
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

    # ------------------------------------------------------------------------ kernel access
    def writable_limbs(self, lo: int | None = None, hi: int | None = None) -> torch.Tensor:
        """The limb tensor itself, C-contiguous, for a kernel that adds into it in place (after
        widening the window to cover absolute limbs ``[lo, hi)`` when given).  Carries may be
        pending (no carry pass runs here): a writer must keep every limb below 2**62 in magnitude
        and report its additions per limb with :meth:`count_additions`."""
        if lo is not None:
            self.widen(lo, hi)
        self._limbs = self._limbs.contiguous()
        return self._limbs

    def count_additions(self, count: int) -> None:
        """Note ``count`` more additions of a part below 2**32 to any one limb (carries are
        propagated once their total could overflow the int64 limbs)."""
        self._pending += count
        if self._pending >= MAX_PENDING:
            self.normalize()

    def mark_nar(self, mask: torch.Tensor) -> None:
        """Make the accumulators where ``mask`` (bool, broadcast to the shape) holds NaR."""
        self._nar |= mask

    def nar_at(self, index: torch.Tensor) -> torch.Tensor:
        """NaR flags at flat positions ``index`` as known now, without a carry pass: an overflow
        still hidden in pending carries is flagged by the next :meth:`normalize`."""
        return self._nar.view(-1).index_select(0, index)

    def zeros_like(self) -> Quire:
        """A new quire of zeros with this one's format, shape and device."""
        return Quire(self.fmt, self.shape, self.device)

    @classmethod
    def wrap(cls, fmt: PositFormat, limbs: torch.Tensor, offset: int) -> Quire:
        """A quire over normalised limbs ``(*shape, L)`` (as :attr:`limbs` returns them, or rows of
        them) without copying them or propagating carries, and without NaR.  The tensor is shared:
        adding into the quire (e.g. ``merge``) may change the caller's limbs."""
        q = cls(fmt, limbs.shape[:-1], device=limbs.device)
        q._limbs, q._offset = limbs, int(offset)  # normalised already, nothing pending
        return q

    # ------------------------------------------------------------------------ loading values
    def _add_planes(self, planes, nar: torch.Tensor) -> None:
        """Add the sum over the leading dims of planes of values shaped ``(..., *shape)``."""
        self._nar |= nar
        if planes.empty:
            return
        k = planes.numel // max(1, self.shape.numel())
        width = EXACT_BITS - max(1, math.ceil(math.log2(max(k, 2))))
        for base, digits in planes.planes(width):
            self.fold(digits.reshape(-1, *self.shape).sum(0), base)

    def _check_tail(self, shape: torch.Size, what: str) -> None:
        n = len(self.shape)
        if len(shape) < n or tuple(shape[len(shape) - n :]) != tuple(self.shape):
            raise ValueError(
                f"Quire.{what}: the trailing dimensions of the input {tuple(shape)} must equal "
                f"the quire shape {tuple(self.shape)}"
            )

    @single_threaded
    def add(self, x: torch.Tensor) -> None:
        """Add ``round(x)`` exactly; dims of ``x`` before the quire shape are summed."""
        x = as_factor(x, self.device, "add")
        self._check_tail(x.shape, "add")
        self._add_planes(*products(self.fmt, x, None, len(self.shape)))

    @single_threaded
    def fma(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Add ``round(a) * round(b)`` exactly (broadcast; leading dims beyond the shape summed)."""
        a, b = as_factor(a, self.device, "fma"), as_factor(b, self.device, "fma")
        try:
            shape = torch.broadcast_shapes(a.shape, b.shape)
        except RuntimeError as err:
            raise ValueError(
                f"Quire.fma: shapes {tuple(a.shape)} and {tuple(b.shape)} do not broadcast"
            ) from err
        self._check_tail(shape, "fma")
        self._add_planes(*products(self.fmt, a.expand(shape), b.expand(shape), len(self.shape)))

    def add_outer(
        self, post: torch.Tensor, pre: torch.Tensor, scale: torch.Tensor | float | None = None
    ) -> None:
        """Add ``sum_k round(scale) * round(post[k, :])^T round(pre[k, :])`` exactly.

        Args:
            post: ``(K, M)`` (or ``(M,)`` for K = 1), e.g. errors or 0/1 events (bool).
            pre: ``(K, N)`` (or ``(N,)``), e.g. 0/1 events or traces.
            scale: optional scalar, or a tensor broadcastable to ``post`` (per-sample or per-row
                factors such as a learning rate or ``A_plus``); rounded to the format.
        The quire's shape must be ``(M, N)``.  A handful of exact float64 GEMMs of digit planes
        (:func:`neuro.numerics.outer.add_outer`), never the ``(K, M, N)`` products.
        """
        outer.add_outer(self, post, pre, scale)

    def add_outer_events(
        self, post: torch.Tensor, pre: torch.Tensor, budget: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """:meth:`add_outer` term by term for rows with few non-zeros on one side; returns the rows
        and columns reached, or None (nothing added) when not worth it
        (:func:`neuro.numerics.events.add_outer_events`)."""
        return events.add_outer_events(self, post, pre, budget)

    @classmethod
    def from_float64(cls, fmt: PositFormat, x: torch.Tensor) -> Quire:
        """A quire of shape ``x.shape`` holding the float64 values ``x`` *exactly*.

        Unlike :meth:`add` (which first rounds its input to ``fmt``) any finite float64 value is kept
        bit for bit: ``x = sig * 2**e`` with a 53-bit integer ``sig`` is scattered into 32-bit limbs.
        NaN and infinities become NaR.  ``fmt`` only names the quire's format (for later rounding).
        """
        x = x.to(torch.float64)
        shape = x.shape
        flat = x.reshape(-1)
        finite = torch.isfinite(flat)
        nar = ~finite
        flat = torch.where(finite, flat, torch.zeros((), dtype=torch.float64, device=flat.device))
        mant, ex = torch.frexp(flat)
        sig = (mant * float(1 << 53)).to(torch.int64)  # exact: |mant| in [0.5, 1) has 53 bits
        exp = ex.to(torch.int64) - 53
        nonzero = sig != 0
        if not bool(nonzero.any()):
            return cls._zeros_or_nar(fmt, nar.reshape(shape))
        lo = int(exp[nonzero].min())
        hi = int(exp[nonzero].max()) + 53
        off = lo // LIMB_BITS
        length = -(-hi // LIMB_BITS) - off + 2
        pos = torch.where(nonzero, exp - LIMB_BITS * off, torch.zeros_like(exp))
        j = pos // LIMB_BITS
        b = pos % LIMB_BITS
        mag = sig.abs()
        one = torch.ones_like(b)
        low = (mag & ((one << (LIMB_BITS - b)) - 1)) << b  # < 2**32
        rest = mag >> (LIMB_BITS - b)  # < 2**53
        limbs = torch.zeros(flat.numel(), length, dtype=torch.int64, device=x.device)
        limbs.scatter_add_(1, j.unsqueeze(1), low.unsqueeze(1))
        limbs.scatter_add_(1, (j + 1).unsqueeze(1), (rest & _LIMB_MASK).unsqueeze(1))
        limbs.scatter_add_(1, (j + 2).unsqueeze(1), (rest >> LIMB_BITS).unsqueeze(1))
        limbs = torch.where((sig < 0).unsqueeze(1), -limbs, limbs)
        return cls.from_limbs(fmt, limbs.reshape(*shape, length), off, nar.reshape(shape))

    @classmethod
    def _zeros_or_nar(cls, fmt: PositFormat, nar: torch.Tensor) -> Quire:
        """Zeros of ``nar``'s shape, NaR where ``nar`` holds (one zero limb then, else none)."""
        if bool(nar.any()):
            zero = torch.zeros(*nar.shape, 1, dtype=torch.int64, device=nar.device)
            return cls.from_limbs(fmt, zero, 0, nar)
        return cls(fmt, nar.shape, device=nar.device)

    def scaled(self, sig: int, exp: int) -> Quire:
        """A new quire holding ``self * sig * 2**exp`` exactly (see :meth:`scale_`); this one is
        left unchanged."""
        self.normalize()
        out = Quire(self.fmt, self.shape, self.device)
        out._limbs, out._offset, out._nar = self._limbs, self._offset, self._nar.clone()
        return out._scale(sig, exp, shared=True)

    def scale_(self, sig: int, exp: int) -> Quire:
        """Multiply every accumulator by ``sig * 2**exp`` exactly, in place, and return the quire
        (``|sig| < 2**30``, e.g. a posit's significand).  NaR entries stay NaR; a product beyond
        the range becomes NaR.

        The scale's trailing zeros join the shift: with ``|sig| = m * 2**t`` (m odd) and
        ``exp + t = 32 q + r``, the limbs are multiplied by ``m * 2**r`` (one or two integer
        factors of at most 2**31, each input dropped once used), negated for ``sig < 0``, and the
        window moves by ``q`` limbs.  Not trimmed: at most two limbs more than before.
        """
        return self._scale(sig, exp, shared=False)

    @single_threaded
    def _scale(self, sig: int, exp: int, shared: bool) -> Quire:
        """:meth:`scale_`; ``shared``: the limbs belong to another quire too (never written)."""
        sig, exp = int(sig), int(exp)
        if abs(sig) >= 1 << 30:
            raise ValueError(f"Quire.scale_: |sig| must be below 2**30, got {sig}")
        self.normalize()
        if self._limbs.shape[-1] == 0 or sig == 0:
            length = 1 if bool(self._nar.any()) else 0  # one zero limb under NaR, as from_float64
            self._limbs = torch.zeros(*self.shape, length, dtype=torch.int64, device=self.device)
            self._offset = 0
            return self
        low = abs(sig) & -abs(sig)  # lowest set bit: move the trailing zeros into the exponent
        exp += low.bit_length() - 1
        magnitude = abs(sig) // low
        quot, rem = divmod(exp, LIMB_BITS)
        # multiply by magnitude * 2**rem with factors <= 2**31, dropping each input once it is used
        factors = [magnitude << rem] if magnitude << rem <= 1 << 31 else [magnitude, 1 << rem]
        for factor in factors:
            if factor != 1:
                self._limbs = _times(self._limbs, factor)
                shared = False
        if shared:  # no factor applied: the limbs are still the other quire's
            self._limbs = self._limbs.neg() if sig < 0 else self._limbs.clone()
        elif sig < 0:
            self._limbs.neg_()
        self._offset += quot
        self._pending += 1  # negated limbs are not normalised, and the range is not checked yet
        return self

    def sign(self) -> torch.Tensor:
        """Exact sign (-1, 0, +1; int64) of every accumulator (NaR reads as 0)."""
        limbs = self.limbs
        if limbs.shape[-1] == 0:
            return torch.zeros(self.shape, dtype=torch.int64, device=self.device)
        neg = limbs[..., -1] < 0
        nonzero = (limbs != 0).any(-1) & ~self._nar
        return torch.where(neg, -1, torch.where(nonzero, 1, 0)).to(torch.int64)

    # ------------------------------------------------------------------------ parts and merging
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
        bl = bit_length(a).clamp(min=1)
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
        negative, scale, sig, sticky, is_zero = self._top_bits(EXACT_BITS)
        bits = self.fmt.round_parts(negative, scale, sig, sticky)
        bits = torch.where(is_zero, torch.zeros_like(bits), bits)
        return torch.where(self._nar, torch.full_like(bits, self.fmt.nar), bits)

    @single_threaded
    def to_float(self) -> torch.Tensor:
        """Each accumulator's exact value rounded to the nearest float64 (NaR -> nan)."""
        negative, scale, sig, sticky, is_zero = self._top_bits(EXACT_BITS + 2)
        # Results below 2**-1022 are subnormal: they keep fewer bits, so round at a higher bit.
        extra = (-1022 - scale).clamp(0, 60)
        shift = 2 + extra
        one = torch.ones_like(sig)
        mant = sig >> shift
        rest = sig & ((one << shift) - 1)
        half = one << (shift - 1)
        up = (rest > half) | ((rest == half) & (sticky | ((mant & 1) == 1)))
        mant = mant + up.to(torch.int64)
        value = torch.ldexp(mant.to(torch.float64), (scale - (EXACT_BITS - 1) + extra).to(torch.float64))
        value = torch.where(negative, -value, value)
        value = torch.where(is_zero, torch.zeros_like(value), value)
        return torch.where(self._nar, torch.full_like(value, float("nan")), value)

    def __repr__(self) -> str:
        return (
            f"Quire({self.fmt.name}, shape={tuple(self.shape)}, limbs=[{self._offset}, "
            f"{self._offset + self._limbs.shape[-1]}))"
        )



def _times(limbs: torch.Tensor, factor: int) -> torch.Tensor:
    """Normalised limbs ``(*shape, L)`` (L >= 1) times an integer ``0 < factor <= 2**31``, normalised,
    in a new tensor of ``L`` limbs, or ``L + 1`` when the product may need them: every partial
    product and carry stays below 2**63, and with ``|top| <= t`` the new top lies in
    ``[-t * factor, (t + 1) * factor)``: a signed 32-bit limb when ``(t + 1) * factor <= 2**31``."""
    top = int(limbs[..., -1].abs().amax()) if limbs.numel() else 0
    extra = 0 if (top + 1) * factor <= 1 << 31 else 1
    zeros = torch.zeros(*limbs.shape[:-1], extra, dtype=torch.int64, device=limbs.device)
    out = torch.cat([limbs, zeros], -1).mul_(factor)
    for i in range(out.shape[-1] - 1):
        out[..., i + 1] += out[..., i] >> LIMB_BITS
        out[..., i] &= _LIMB_MASK
    return out
