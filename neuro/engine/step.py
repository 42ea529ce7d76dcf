"""One engine step on one parameter: ``w <- type(round_storage(w + lr * D))`` (see
:mod:`neuro.engine.engine` for the definition), in blocks of rows or over the few entries event
terms reached.

The number-format work is :mod:`neuro.numerics`' (exact loading, scaling and rounding of quire
sums; the fast rounding test; the compiled entry rounding); this module decides what is rounded:
the direction ``D`` (the sum itself, momentum, Adam), the learning rate as a posit product, the
blocks, and keeping the parameter in its type (:class:`~neuro.engine.slot.Slot`).
"""

from __future__ import annotations

import functools

import torch

from neuro.engine.slot import Slot
from neuro.numerics import PositFormat, Quire, round_quire, round_sum_nearest
from neuro.numerics.fast_rounding import (
    estimate_float,
    estimate_limbs,
    round_entries,
    round_nearest_fast,
    round_stochastic_fast,
)

__all__ = [
    "STEP_WORKSPACE_BYTES",
    "step_bytes_per_entry",
    "step_block_rows",
    "step_workspace_bytes",
    "lr_parts",
    "step_dense",
    "step_entries",
]

_FAST = True  # the fast rounding path of neuro.numerics.fast_rounding (tests switch it off to compare bits)
#: Temporary memory of step() per block of rows (the blocks' size follows from it).
STEP_WORKSPACE_BYTES = 8 << 20


def step_bytes_per_entry(limbs: int, general: bool) -> int:
    """Temporary bytes per entry of ``UpdateEngine.step`` for a quire window of ``limbs`` limbs,
    measured with ``neuro.training.plan.TensorBytes`` (bposit32 quire, float32 weights): ``general`` for
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


@functools.lru_cache(maxsize=256)
def lr_parts(fmt: PositFormat, value: float) -> tuple[int, int]:
    """``round_fmt(value) = sig * 2**exp`` as Python ints (cached: schedules repeat values)."""
    sig, exp, _ = fmt.decompose(fmt.encode(torch.tensor([float(value)], dtype=torch.float64)))
    return int(sig[0]), int(exp[0])


def _group_lr(slot: Slot) -> tuple[int, int]:
    g = slot.group
    return lr_parts(g["format"], g["lr"]) if g["lr"] else (0, 0)


def step_dense(slot: Slot, seed: int) -> None:
    """Step one parameter over every entry, in blocks of leading rows (:func:`step_block_rows`),
    then clear its quire.  Raises the slot's NaR error (parameter unchanged) on a NaR sum."""
    q = slot.quire
    if bool(q.nar.any()):
        raise slot.nar_error()
    g = slot.group
    slot.init_buffers()
    lr = _group_lr(slot)
    if q.limbs.shape[-1] == 0:  # only zero contributions since the last step: an exact 0
        q.widen(0, 1)
    limbs = q.limbs.reshape(-1, q.limbs.shape[-1])  # (entries, L), normalised
    general = bool(g["momentum"] or g["adam"]) or slot.type.constraint == "rotor" or not _FAST
    block = step_block_rows(slot.rows, slot.per_row, limbs.shape[-1], general)
    for r0 in range(0, slot.rows, block):
        _apply_rows(slot, seed, limbs, q.offset, lr, r0, min(slot.rows, r0 + block))
    q.clear()
    slot.forget_events()
    slot.step += 1


def step_entries(slot: Slot, index: torch.Tensor, seed: int) -> None:
    """Step one parameter over its flat entries ``index`` alone (same bits as :func:`step_dense`
    when every other entry keeps its bits, see :meth:`Slot.step_entries`): nearest rounding to
    float storage through the compiled kernel (:func:`~neuro.numerics.fast_rounding.round_entries`),
    the rest (posit storage, stochastic rounding, the subnormal or overflowing results the kernel
    leaves) through :func:`_round_rows`."""
    g = slot.group
    float_storage = not isinstance(slot.storage, PositFormat)
    if g["rounding"] == "nearest" and float_storage and slot.param.device.type == "cpu":
        if bool(slot.quire.nar_at(index).any()):
            raise slot.nar_error()
        left = round_entries(slot.quire, index, _group_lr(slot), slot.param.data, *slot.clamp_range())
        if left is not None and left.numel() == 0:
            slot.quire.clear_at(index[:0], rest_zero=True)
            slot.forget_events()
            slot.step += 1
            return
        index = index if left is None else left
    q = slot.quire.take(index)
    if bool(q.nar.any()):
        raise slot.nar_error()
    lr = _group_lr(slot)
    if q.limbs.shape[-1] == 0:
        q.widen(0, 1)
    flat = slot.param.data.view(-1)
    w = flat.index_select(0, index).to(torch.float64)
    u = slot.uniform_at(seed, slot.step, index) if g["rounding"] == "stochastic" else None
    new = _round_rows(slot, w, q.limbs, q.offset, None, lr, u)
    flat.index_copy_(0, index, slot.constrain(new).to(flat.dtype))
    slot.quire.clear_at(index, rest_zero=True)
    slot.forget_events()
    slot.step += 1


def _apply_rows(
    slot: Slot, seed: int, limbs: torch.Tensor, offset: int, lr: tuple[int, int], r0: int, r1: int
) -> None:
    """Update rows ``r0:r1`` (of the quire's leading axis) of one parameter: ``limbs`` are the
    whole quire's, ``(entries, L)``; ``lr = (sig, e)``."""
    g = slot.group
    fmt: PositFormat = g["format"]
    a, b = r0 * slot.per_row, r1 * slot.per_row
    pview = slot.param.data if slot.whole else slot.param.data[r0:r1]
    w = pview.to(torch.float64).reshape(-1)
    stochastic = g["rounding"] == "stochastic"
    u = slot.uniform(seed, slot.step, a, b) if stochastic else None
    rows = limbs[a:b]
    d = None  # the direction as exact float64 values (momentum / Adam), else read from the limbs
    if g["momentum"] or g["adam"]:
        s = Quire.wrap(fmt, rows, offset)  # may be changed by a merge: step clears the quire after
        d = _momentum_rows(slot, s, a, b) if g["momentum"] else _adam_rows(slot, s, r0, r1, a, b)
    if slot.type.constraint == "rotor":
        lr_d = _exact_rows(fmt, rows, offset, d).scaled(*lr)
        shape = slot.rows_shape(r0, r1)
        r_new = slot.retract(slot.coeffs(w.reshape(shape)), slot.coeffs(lr_d.to_float().reshape(shape)))
        new = round_quire(Quire.from_float64(fmt, r_new.reshape(-1)), slot.storage, g["rounding"], u)
    else:
        new = _round_rows(slot, w, rows, offset, d, lr, u)
    pview.copy_(slot.constrain(new.reshape(pview.shape)).to(pview.dtype))


def _exact_rows(fmt: PositFormat, rows: torch.Tensor, offset: int, d: torch.Tensor | None) -> Quire:
    """The exact direction of some entries: their quire rows, or the float64 values ``d``."""
    return Quire.wrap(fmt, rows, offset) if d is None else Quire.from_float64(fmt, d)


def _round_rows(
    slot: Slot,
    w: torch.Tensor,
    rows: torch.Tensor,
    offset: int,
    d: torch.Tensor | None,
    lr: tuple[int, int],
    u: torch.Tensor | None,
) -> torch.Tensor:
    """``w + lr * D`` rounded once to storage (float64 ``(entries,)``): the fast path of
    :mod:`neuro.numerics.fast_rounding` where it decides, the exact path for the other entries."""
    g = slot.group
    fmt: PositFormat = g["format"]
    top_bit = fmt.quire_top_bit
    if isinstance(slot.storage, PositFormat):
        top_bit = min(top_bit, slot.storage.quire_top_bit)
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
    lr_d = _exact_rows(fmt, rows, offset, d).scaled(*lr)
    if u is None:
        exact = round_sum_nearest(w, lr_d, slot.storage)
    else:
        total = Quire.from_float64(fmt, w)
        total.merge(lr_d)
        exact = round_quire(total, slot.storage, "stochastic", u)
    if sel is None:
        return exact
    new[sel] = exact
    return new


def _momentum_rows(slot: Slot, s: Quire, a: int, b: int) -> torch.Tensor:
    """``m <- round_fmt(beta m + S)`` on entries ``a:b``; returns the new ``m`` (float64, exact D)."""
    fmt: PositFormat = slot.group["format"]
    buf = slot.buffers["momentum_buffer"].view(-1)
    s.merge(
        Quire.from_float64(fmt, buf[a:b].to(torch.float64)).scaled(*lr_parts(fmt, slot.group["momentum"]))
    )
    m = fmt.decode(s.to_bits())
    buf[a:b] = m.to(buf.dtype)
    return m


def _adam_rows(slot: Slot, s: Quire, r0: int, r1: int, a: int, b: int) -> torch.Tensor:
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
    qm = s.scaled(*lr_parts(fmt, 1.0 - b1))
    qm.merge(Quire.from_float64(fmt, exp_avg[a:b].to(torch.float64)).scaled(*lr_parts(fmt, b1)))
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
