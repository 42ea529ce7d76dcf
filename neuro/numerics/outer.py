"""Exact outer-product reductions ``sum_k post[k]^T pre[k]`` into a quire, by float64 GEMMs.

The ``(K, M, N)`` products are never materialised: each factor's exact fixed-point form is cut
into a few digit planes of at most ``c`` bits; a float64 matmul of two planes is exact as long as
every partial sum stays below 2**53, which holds by the choice of ``c`` and of the chunk of ``K``;
the integer result is folded into the limbs (:meth:`Quire.fold`).  A 0/1 event train is one
plane, so such updates cost a handful of GEMMs.  Real x real factors span more bits
than one GEMM can hold, but mostly because of a few values far below the rest: each factor is cut
at a planned bit (``_plan_split``), the bits at or above the cuts make one GEMM per chunk of K,
and the rare values with bits below a cut are added through a sparse path (``index_add`` of exact
products, in digit planes) -- the result is the same exact sum.

Everything here reaches the quire through its public operations (``fold``, ``mark_nar``,
``scale_``, ``trim``, ``merge``); :meth:`Quire.add_outer` is the entry point.
"""

from __future__ import annotations

import bisect
import math

import torch

from neuro.numerics.planes import EXACT_BITS, FloatPlanes, as_factor, products
from neuro.numerics.threads import gemm_threads, one_thread, single_threaded

__all__ = ["add_outer"]

_STATS_BLOCK = 1 << 16  # elements per block of the range scan
_PIPE_ELEMS = 1 << 19  # elements per factor in one row block of the add_outer pipeline (one GEMM call)
_SPLIT_BLOCK = 1 << 16  # elements per piece when rounding and cutting planes in one go
_SAMPLE = 1 << 13  # elements per factor sampled to plan a dense/sparse split of add_outer
_SPARSE_COST = 400  # cost of one product of add_outer's sparse path, in GEMM multiply-adds
_SPARSE_ELEMS = 1 << 22  # products held at once by add_outer's sparse path
_CALL_COST = 1 << 21  # cost of one more GEMM call and fold (thread hand-offs), in multiply-adds


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
    sig = int(mant * 2.0**EXACT_BITS)
    return ex - EXACT_BITS + ((sig & -sig).bit_length() - 1)


def _scale_pow2(x: torch.Tensor, e: int) -> torch.Tensor:
    """``x * 2**e`` (exact for the values used here), in steps that stay inside float64."""
    while e:
        step = max(-1000, min(1000, e))
        x = x * 2.0**step
        e -= step
    return x


def add_outer(
    q, post: torch.Tensor, pre: torch.Tensor, scale: torch.Tensor | float | None = None
) -> None:
    """The body of :meth:`Quire.add_outer` (see there): ``post`` (K, M) or (M,), ``pre`` (K, N) or
    (N,), ``scale`` None, a scalar or a tensor broadcastable to ``post``; quire shape (M, N)."""
    post, pre = as_factor(post, q.device, "add_outer"), as_factor(pre, q.device, "add_outer")
    if post.dim() == 1:
        post = post.unsqueeze(0)
    if pre.dim() == 1:
        pre = pre.unsqueeze(0)
    if (
        len(q.shape) != 2
        or post.dim() != 2
        or pre.dim() != 2
        or post.shape[0] != pre.shape[0]
        or (post.shape[1], pre.shape[1]) != tuple(q.shape)
    ):
        raise ValueError(
            f"Quire.add_outer: expected post (K, M) and pre (K, N) with quire shape (M, N); "
            f"got post {tuple(post.shape)}, pre {tuple(pre.shape)}, quire {tuple(q.shape)}"
        )
    if scale is None and q.device.type == "cpu" and _outer_fast(q, post, pre):
        return
    if scale is None:
        a, nar_a = products(q.fmt, post, None, 1)
    else:
        scale_t = as_factor(scale, q.device, "add_outer")
        try:
            torch.broadcast_shapes(scale_t.shape, post.shape)
        except RuntimeError as err:
            raise ValueError(
                f"Quire.add_outer: scale of shape {tuple(scale_t.shape)} does not broadcast "
                f"to post {tuple(post.shape)}"
            ) from err
        if scale_t.numel() == 1 and q.device.type == "cpu" and _outer_scaled(q, post, pre, scale_t):
            return
        a, nar_a = products(q.fmt, post, scale_t.expand(post.shape), 1)
    b, nar_b = products(q.fmt, pre, None, 1)
    q.mark_nar(nar_a[:, None] | nar_b[None, :])
    _outer_planes(q, a, b, post.shape[0])


@single_threaded
def _outer_scaled(q, post: torch.Tensor, pre: torch.Tensor, scale: torch.Tensor) -> bool:
    """``add_outer`` with one finite scale ``s``: ``round(s) * sum_k post[k]^T pre[k]``, the sum
    made by :meth:`_outer_fast` in a scratch quire whose limbs are then multiplied exactly by
    ``round(s) = sig * 2**e`` and added.  Returns False (nothing done) where the general path
    must run (a non-finite scale or factor)."""
    fmt = q.fmt
    s = scale.reshape(1).to(torch.float64)
    if not bool(torch.isfinite(s).all()):
        return False
    scratch = q.zeros_like()
    if not _outer_fast(scratch, post, pre):
        return False
    sig, exp, _ = fmt.decompose(fmt.encode(s))
    sig, exp = int(sig[0]), int(exp[0])
    if sig == 0 or scratch.limbs.shape[-1] == 0:
        return True
    scratch.scale_(sig, exp)
    scratch.trim()  # drop the carry limbs the scaling adds where they only extend the sign
    q.merge(scratch)  # so this quire's window widens only as far as the values need
    return True


def _outer_factor(q, x: torch.Tensor):
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
    fmt = q.fmt
    q_big, q_small = fmt.quantize(torch.tensor([biggest, smallest], dtype=torch.float64)).tolist()
    hi = math.frexp(q_big)[1]  # rounding is monotone: every |round(x)| <= round(max |x|)
    if biggest == smallest:  # one magnitude: values are 0 and +-round(biggest)
        return ("copy" if q_big == biggest else "quantize"), _lowest_bit(q_big), hi
    # Every non-zero |round(x)| is a pattern >= round(smallest), and the exponent of a
    # pattern's last bit never decreases as the pattern grows.
    _, exp, _ = fmt.decompose(fmt.encode(torch.tensor([q_small], dtype=torch.float64)))
    return "quantize", int(exp[0]), hi


@single_threaded
def _outer_fast(q, post: torch.Tensor, pre: torch.Tensor) -> bool:
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
    fa = _outer_factor(q, post)
    if fa is False:
        return False
    fb = _outer_factor(q, pre)
    if fb is False:
        return False
    if fa is None or fb is None:
        return True
    fmt = q.fmt
    if not (fmt.max_scale < 300 and fmt.ulp_min > -300):
        return False  # keep float64 products, sums and plane cuts far from under/overflow
    (kind_a, lo_a, hi_a), (kind_b, lo_b, hi_b) = fa, fb
    k = post.shape[0]
    m, n = q.shape
    width_a, width_b, chunk = _plan_widths(hi_a - lo_a, hi_b - lo_b, k, m, n)
    count_a = -(-(hi_a - lo_a) // width_a)
    count_b = -(-(hi_b - lo_b) // width_b)
    split = None
    if count_a * count_b > 1:
        split = _plan_split(
            fa, _sample_low_bits(q, post, kind_a), fb, _sample_low_bits(q, pre, kind_b), k, m, n
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
    buf_a = torch.empty(rows, count_a * m, dtype=torch.float64, device=q.device)
    buf_b = torch.empty(rows, count_b * n, dtype=torch.float64, device=q.device)
    acc = torch.zeros(count_a * m, count_b * n, dtype=torch.float64, device=q.device)
    done = 0  # rows accumulated since the last fold
    for start in range(0, k, rows):
        stop = min(k, start + rows)
        with one_thread():
            da = _pipe_rows(
                q, post[start:stop], buf_a[: stop - start], (kind_a, lo_a, hi_a, width_a, count_a),
                start, sparse_a if split is not None and split_a else None,
            )  # fmt: skip
            db = _pipe_rows(
                q, pre[start:stop], buf_b[: stop - start], (kind_b, lo_b, hi_b, width_b, count_b),
                start, sparse_b if split is not None and split_b else None,
            )  # fmt: skip
        with gemm_threads():
            acc.addmm_(da.T, db)
        done += stop - start
        if split is not None:  # bounded memory: the sparse terms can be added at any time
            _flush_sparse(q, sparse_a, pre, kind_b, None, False, stop == k)
            _flush_sparse(q, sparse_b, post, kind_a, lo_a if split_a else None, True, stop == k)
        if done >= chunk or stop == k:
            for i in range(count_a):
                for j in range(count_b):
                    e = lo_a + width_a * i + lo_b + width_b * j
                    block = acc[i * m : (i + 1) * m, j * n : (j + 1) * n]
                    q.fold(_scale_pow2(block, -e), e)
            acc.zero_()
            done = 0
    return True

def _pipe_rows(q, x, buf, plan: tuple, row0: int, found: list | None) -> torch.Tensor:
    """One block of rows of a factor for :func:`_outer_fast`, ``plan = (kind, lo, hi, width,
    count)``: with ``found``, its multiples of ``2**lo`` (the cut) into ``buf`` and its remainders
    into ``found`` (:func:`_pipe_split`); else its ``count`` digit planes (:func:`_pipe_planes`)."""
    kind, lo, hi, width, count = plan
    if found is not None:
        return _pipe_split(q, x, buf, kind, lo, hi, row0, found)
    return _pipe_planes(q, x, buf, kind, lo, width, count)


@single_threaded
def _flush_sparse(
    q, found: list, other, kind: str, cut: int | None, transpose: bool, last: bool
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
    rows = _rounded_rows(q, other, ks, kind, cut)
    _fold_sparse(q, cols, vals, rows, transpose)

@single_threaded
def _sample_low_bits(q, x: torch.Tensor, kind: str) -> list[int]:
    """Sorted exponents of the lowest set bit of the rounded non-zero values of a strided
    sample of ``x`` (at most ``_SAMPLE`` elements): what :func:`_plan_split` estimates from."""
    flat = x.reshape(-1)
    step = max(1, flat.numel() // _SAMPLE)
    while math.gcd(step, x.shape[-1]) > 1:  # visit every column
        step += 1
    sample = flat[::step]
    v = q.fmt.quantize(sample) if kind == "quantize" else sample.to(torch.float64)
    low = torch.sort(_low_bits(v[v != 0])).values
    return [len(sample), *low.tolist()]

def _pipe_split(q, x, buf, kind, cut, hi, row0, found: list) -> torch.Tensor:
    """Round (or copy) rows ``x`` (R, D) of a factor, write their multiples of ``2**cut``
    (round to nearest) into ``buf`` (R, D) and append the non-zero remainders to ``found`` as
    ``(row indices + row0, column indices, float64 values)``.  Every rounded value is below
    ``2**hi`` and ``hi - cut <= 50``, so ``(v + C) - C`` rounds exactly at ``2**cut``; the
    remainder keeps a subset of the value's bits (exact in the value's float type)."""
    fmt = q.fmt
    d = x.shape[1]
    step = max(1, _SPLIT_BLOCK // max(d, 1))
    for r0 in range(0, x.shape[0], step):
        r1 = min(x.shape[0], r0 + step)
        piece = x[r0:r1].reshape(-1)
        v = fmt.quantize_block(piece) if kind == "quantize" else piece
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

def _rounded_rows(q, x: torch.Tensor, ks: torch.Tensor, kind: str, cut: int | None) -> torch.Tensor:
    """Rows ``ks`` of the rounded factor ``x`` as float64 (E, D); with ``cut``, only their
    multiples of ``2**cut`` as :meth:`_pipe_split` keeps them."""
    uniq, inverse = torch.unique(ks, return_inverse=True)
    rows = x[uniq]
    v = q.fmt.quantize(rows) if kind == "quantize" else rows.to(torch.float64)
    if cut is not None:
        c = 1.5 * 2.0 ** (cut + 52)
        v = (v + c) - c
    return v[inverse]

def _fold_sparse(
    q, idx: torch.Tensor, vals: torch.Tensor, rows: torch.Tensor, transpose: bool
) -> None:
    """Add ``vals[e] * rows[e, :]`` to accumulator row ``idx[e]`` (column when ``transpose``)
    for every e, exactly: digit planes of both sides sized so that every sum of digit products
    a row receives stays below 2**53."""
    m, n = q.shape
    count = int(torch.bincount(idx).max())
    budget = EXACT_BITS - max(0, math.ceil(math.log2(count)))
    a = FloatPlanes(vals, q.fmt.max_significand_bits)
    b = FloatPlanes(rows, q.fmt.max_significand_bits)
    if a.empty or b.empty:
        return
    wa = min(range(1, budget), key=lambda w: -(-a.range_bits // w) * -(-b.range_bits // (budget - w)))
    for ea, da in a.planes(wa):
        for eb, db in b.planes(budget - wa):
            acc = torch.zeros(
                n if transpose else m, m if transpose else n, dtype=torch.float64, device=q.device
            )
            acc.index_add_(0, idx, da[:, None] * db)
            q.fold(acc.T if transpose else acc, ea + eb)

def _pipe_planes(q, x, buf, kind, lo, width, count) -> torch.Tensor:
    """Round (or copy) rows ``x`` (R, D) of a factor and cut them into ``count`` float64
    planes, written side by side into ``buf`` (R, count * D) and returned:
    ``value == sum_p plane_p``, ``plane_p`` a multiple of ``2**(lo + width*p)`` whose
    magnitude is at most ``2**(lo + width*(p+1))`` (digits of at most ``width`` bits).  Work
    runs on cache-sized pieces; each value has at most the format's significant bits, so its
    upper and lower parts are exact in float32 too when the format fits float32."""
    if count == 1:
        if kind == "quantize":
            q.fmt.quantize_into(x, buf)
        elif x.dtype == torch.float64:
            return x
        else:
            buf.copy_(x)
        return buf
    fmt = q.fmt
    d = x.shape[1]
    cuts = [lo + width * (p + 1) for p in range(count - 1)]
    hi = lo + width * count  # an upper bound of the factor's top bit
    # Round-to-nearest at a cut with the float unit, (v + C) - C, C = 1.5 * 2**(cut + mant):
    # exact when |v| < 2**(cut + mant - 1); the digit below it has at most `width` bits.
    single = (
        fmt.rounds_in_float32(x)
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
        v = fmt.quantize_block(piece) if kind == "quantize" else piece
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

def _outer_planes(q, a, b, k: int) -> None:
    if a.empty or b.empty:
        return
    m, n = q.shape
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
                q.fold(product, ea + eb)


def _low_bits(v: torch.Tensor) -> torch.Tensor:
    """Exponent of the lowest set bit of each non-zero float64 value (int64)."""
    mant, ex = torch.frexp(v)
    sig = (mant * 2.0**EXACT_BITS).to(torch.int64).abs()
    lsb = torch.frexp((sig & -sig).to(torch.float64))[1].to(torch.int64) - 1
    return ex.to(torch.int64) - EXACT_BITS + lsb


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
        budget = EXACT_BITS - log_chunk
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
        budget = EXACT_BITS - log_chunk
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
