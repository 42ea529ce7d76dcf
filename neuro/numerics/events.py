"""The event path of the outer-product reduction: few terms, added one by one at their places.

When the rows of ``post`` or ``pre`` hold few non-zeros (0/1 event trains times real rows), the
products of ``sum_k post[k]^T pre[k]`` reach few accumulators: enumerating them costs in
proportion to the terms instead of to the ``M x N`` accumulators.  :meth:`Quire.add_outer_events`
is the entry point; the terms go through the compiled kernel (``neuro/_kernels/quire.c``) or torch.
"""

from __future__ import annotations

import torch

from neuro.numerics.kernels import compiled_kernels
from neuro.numerics.planes import as_factor
from neuro.numerics.threads import single_threaded

__all__ = ["add_outer_events"]


@single_threaded
def add_outer_events(q, post: torch.Tensor, pre: torch.Tensor, budget: int | None = None):
    """``q.add_outer(post, pre)`` term by term, for rows ``k`` with few non-zeros on one side.

    In each row ``k`` the sparser side is enumerated: every ``post[k, m] != 0`` with the whole
    ``pre[k, :]`` (a row of the result), or every ``pre[k, n] != 0`` with ``post[k, :]`` (a
    column); each product is added exactly at its own place (integer significands added into the
    limbs).  Event trains times real rows reach a few rows and columns per call, so this costs in
    proportion to those terms instead of to the ``M x N`` accumulators.

    Args:
        q: the quire, of shape ``(M, N)``.
        post: ``(K, M)``; pre: ``(K, N)`` (bool events or floats).
        budget: the most terms worth enumerating (default ``2 * M * N`` with the compiled
            kernel, ``M * N // 2`` without).
    Returns:
        ``(rows, cols)``: the rows and the columns that received terms (long, possibly
        repeated); or None, with nothing added, when the terms exceed the budget or a factor
        is not finite (then use ``add_outer``).  Formats have at most 32 bits, so a
        significand has at most 30 bits and a product of two fits an int64.
    """
    post, pre = as_factor(post, q.device, "add_outer_events"), as_factor(pre, q.device, "add_outer_events")
    m, n = q.shape if len(q.shape) == 2 else (-1, -1)
    if (
        post.dim() != 2
        or pre.dim() != 2
        or post.shape[0] != pre.shape[0]
        or (post.shape[1], pre.shape[1]) != (m, n)
    ):
        raise ValueError(
            f"Quire.add_outer_events: expected post (K, M) and pre (K, N) with quire shape "
            f"(M, N); got post {tuple(post.shape)}, pre {tuple(pre.shape)}, quire {tuple(q.shape)}"
        )
    if budget is None:  # the compiled kernel adds a term in a few ns: worth it well past M x N
        budget = 2 * m * n if q.device.type == "cpu" and compiled_kernels() is not None else m * n // 2
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
    values = q.fmt.quantize(
        torch.cat([post[k_r, rows], pre[k_c, cols], pre[k_r].reshape(-1), post[k_c].reshape(-1)]).to(
            torch.float64
        )
    )
    kernel = compiled_kernels() if q.device.type == "cpu" else None
    done = (
        _events_compiled(q, kernel, values, rows, cols, e_r, events)
        if kernel is not None
        else _events_torch(q, values, rows, cols, e_r, events)
    )
    if not done:
        return None
    q.count_additions(events)  # per limb: at most one part per event, each < 2**32
    return rows, cols


def _events_compiled(q, kernel, values, rows, cols, e_r: int, events: int) -> bool:
    """The terms of :func:`add_outer_events` through ``neuro/_kernels/quire.c``."""
    m, n = q.shape
    one, many_r, many_c = values[:events], values[events : events + e_r * n], values[events + e_r * n :]
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
        limbs = q.writable_limbs(lo, hi + 3)
        length = limbs.shape[-1]
        for e, o, idx, mny, width, s_idx, s_j in parts:
            kernel.quire_event_fold(
                e, o.data_ptr(), idx.data_ptr(), mny.data_ptr(), width, s_idx, s_j,
                limbs.data_ptr(), length, q.offset,
            )  # fmt: skip
    return True


def _events_torch(q, values, rows, cols, e_r: int, events: int) -> bool:
    """The terms of :func:`add_outer_events` with torch operations (no compiler, or not CPU)."""
    if not bool(torch.isfinite(values).all()):
        return False
    m, n = q.shape
    bits = q.fmt.max_significand_bits
    mant, exp = torch.frexp(values)
    sig = torch.ldexp(mant, torch.tensor(bits)).to(torch.int64)
    exp = exp.to(torch.int64) - bits
    sig_one, sig_many, exp_one, exp_many = sig[:events], sig[events:], exp[:events], exp[events:]
    width = torch.cat([torch.full((e_r,), n), torch.full((events - e_r,), m)]).to(q.device)
    value = sig_many * torch.repeat_interleave(sig_one, width, output_size=sig_many.numel())
    exponent = exp_many + torch.repeat_interleave(exp_one, width, output_size=sig_many.numel())
    arange_n, arange_m = torch.arange(n, device=q.device), torch.arange(m, device=q.device)
    place = torch.cat(
        [
            (rows * n).unsqueeze(1).add(arange_n).reshape(-1),
            (arange_m * n).add(cols.unsqueeze(1)).reshape(-1),
        ]
    )
    keep = value != 0
    if bool(keep.any()):
        q.fold_at(value[keep], exponent[keep], place[keep])
    return True
