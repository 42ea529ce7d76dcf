"""Event-driven LIF simulation with Norse's LIF arithmetic.

* :func:`simulate_lif_events` -- event-driven simulation of one LIF layer driven by sparse spike
  inputs: each step touches only the weight rows of presynaptic neurons that spiked, then applies
  Norse's LIF step in exactly :func:`neuro.neurons.lif_step`'s operation order.  Backends: a small C
  kernel (``neuro/_kernels/lif_events.c``, compiled on first use with the system C compiler,
  without fast-math or FMA contraction; batch elements on parallel threads), or a torch loop
  (block-wise sparse products, then the shared step :func:`neuro.neurons.lif_step_events`) when no
  compiler is present.
  Only the order in which simultaneous synaptic inputs are summed can differ from the dense matmul
  of :class:`neuro.sim.network.Network` (ulp level; none with at most two input spikes per step).
"""

from __future__ import annotations

import warnings

import torch

from neuro import neurons

__all__ = ["simulate_lif_events", "compiled_kernel"]


def _lif_parameters(tau_mem: float, tau_syn: float, v_leak: float, v_th: float, v_reset: float,
                    dtype: torch.dtype) -> neurons.LIFParameters:
    """The layer's :class:`neuro.neurons.LIFParameters`: inverse time constants as 0-dim tensors of
    ``dtype`` (as :class:`~neuro.sim.network.Network` holds them), potentials as python floats."""
    return neurons.LIFParameters(
        tau_syn_inv=torch.tensor(1.0 / tau_syn if tau_syn else 0.0, dtype=dtype),
        tau_mem_inv=torch.tensor(1.0 / tau_mem, dtype=dtype),
        v_leak=v_leak, v_th=v_th, v_reset=v_reset,
    )


def _as_bytes(spikes: torch.Tensor) -> torch.Tensor:
    """The 0/1 spikes as a contiguous uint8 CPU tensor (ValueError for other values)."""
    if spikes.dtype == torch.bool:
        return spikes.contiguous().view(torch.uint8)
    if spikes.dtype == torch.uint8:
        if spikes.numel() and int(spikes.max()) > 1:
            raise ValueError("simulate_lif_events: spikes must be 0 or 1")
        return spikes.contiguous()
    if spikes.numel() and bool(((spikes != 0) & (spikes != 1)).any()):
        raise ValueError("simulate_lif_events: spikes must be 0 or 1 (use Network for input currents)")
    return (spikes != 0).contiguous().view(torch.uint8)


_KERNEL = None
_WARNED = False


def compiled_kernel():
    """The ctypes handle of the compiled event-driven LIF kernel (``neuro/_kernels/lif_events.c``),
    compiled on first use; None (after one warning) when no C compiler can build it."""
    global _KERNEL, _WARNED
    if _KERNEL is None:
        import ctypes

        from neuro import _kernels

        lib = _kernels.load("lif_events")
        if lib is None:
            if not _WARNED:
                warnings.warn(
                    "neuro.sim.simulate: the compiled LIF kernel is unavailable "
                    f"({_kernels.error('lif_events')}); falling back to the slower torch loop",
                    RuntimeWarning, stacklevel=3)
                _WARNED = True
            return None
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        for name, real in (("lif_events_f32", ctypes.c_float), ("lif_events_f64", ctypes.c_double)):
            fn = getattr(lib, name)
            fn.restype = i64
            fn.argtypes = [i64] * 6 + [ptr] * 4 + [real] * 5 + [ptr] * 4
        _KERNEL = lib
    return _KERNEL


def simulate_lif_events(
    spikes: torch.Tensor,
    weight: torch.Tensor,
    *,
    dt: float,
    tau_mem: float,
    tau_syn: float,
    v_th: float = 1.0,
    v_reset: float = 0.0,
    v_leak: float = 0.0,
    dtype: torch.dtype = torch.float32,
    block: int = 2048,
    record_v: bool = False,
    record_z: bool = True,
    state: tuple[torch.Tensor, torch.Tensor] | None = None,
    return_state: bool = False,
    backend: str = "auto",
    threads: int | None = None,
):
    """Run a layer of LIF neurons on sparse input spikes, event-driven.

    Each step adds the weight rows of the inputs that spiked (in increasing input index, onto a
    zeroed buffer), then applies Norse's LIF step in :func:`neuro.neurons.lif_step`'s operation order.
    With at most two spikes per step (or exactly representable sums) the results are bit-identical
    to :class:`neuro.sim.network.Network`; otherwise the current's summation order may differ from a
    matmul's by an ulp.  Plain LIF only (no refractoriness, no adaptation).

    Args:
        spikes: input spikes ``(T, B, N)``: bool, uint8 or float, values 0 or 1.
        weight: ``(M, N)`` weights (target, source), like ``Network.weights``.
        dt, tau_mem, tau_syn: seconds.
        v_th, v_reset, v_leak: dimensionless potentials.
        dtype: arithmetic dtype (float32 or float64).
        block: (torch backend) steps whose input currents are formed in one sparse product.
        record_v: also return the membrane potentials ``(T, B, M)``.
        record_z: return the output raster (False: ``z`` is None; the spike count is still in
            ``simulate_lif_events.last_count``).
        state: initial ``(v, i)``, each ``(B, M)`` (default: ``v = v_leak``, ``i = 0``); lets a long
            run go in chunks of steps.
        return_state: also return the final ``(v, i)``.
        backend: ``"c"`` (the compiled kernel; RuntimeError without a compiler), ``"torch"`` (the
            pure torch loop) or ``"auto"`` (the kernel when it builds, else torch with a warning).
        threads: (C backend) batch elements run on this many threads (default:
            ``torch.get_num_threads()``, at most B).
    Returns:
        ``(z, v)``: output spikes ``(T, B, M)`` as bool (or None), and potentials or None; with
        ``return_state``, ``(z, v, (v_final, i_final))``.
    """
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"simulate_lif_events: dtype must be float32 or float64, got {dtype}")
    if backend not in ("auto", "c", "torch"):
        raise ValueError(f"simulate_lif_events: backend must be auto, c or torch, got {backend!r}")
    if spikes.dim() != 3 or weight.dim() != 2 or weight.shape[1] != spikes.shape[2]:
        raise ValueError(f"simulate_lif_events: spikes (T, B, N) and weight (M, N) expected, got "
                         f"{tuple(spikes.shape)} and {tuple(weight.shape)}")
    steps, batch, n_in = spikes.shape
    m = weight.shape[0]
    if state is None:
        v = torch.full((batch, m), v_leak, dtype=dtype)
        i = torch.zeros(batch, m, dtype=dtype)
    else:
        v = state[0].detach().to(dtype=dtype, device="cpu").clone().contiguous()
        i = state[1].detach().to(dtype=dtype, device="cpu").clone().contiguous()
    wt = weight.detach().to(device="cpu", dtype=dtype).T.contiguous()  # (N, M): row n = what n adds
    p = _lif_parameters(tau_mem, tau_syn, v_leak, v_th, v_reset, dtype)
    x = _as_bytes(spikes.detach().cpu())
    lib = None if backend == "torch" else compiled_kernel()
    if lib is None and backend == "c":
        from neuro import _kernels

        raise RuntimeError("simulate_lif_events: compiled kernel unavailable: "
                           f"{_kernels.error('lif_events')}")
    if lib is not None:
        # the kernel takes the step's factors dt tau_mem_inv and -dt tau_syn_inv as the step forms them
        c_mem, c_syn = float(dt * p.tau_mem_inv), float(-dt * p.tau_syn_inv)
        z, vrec = _run_kernel(lib, x, wt, v, i, c_mem, c_syn, dtype, v_leak, v_th, v_reset, record_v,
                              record_z, threads)
    else:
        z, vrec = _run_torch(x, wt, v, i, p, dt, block, record_v)
        simulate_lif_events.last_count = int(z.sum())
        if not record_z:
            z = None
    if return_state:
        return z, vrec, (v, i)
    return z, vrec


simulate_lif_events.last_count = 0


def _run_kernel(lib, x, wt, v, i, c_mem, c_syn, dtype, v_leak, v_th, v_reset, record_v, record_z, threads):
    from concurrent.futures import ThreadPoolExecutor

    steps, batch, n_in = x.shape
    m = wt.shape[1]
    z = torch.zeros(steps, batch, m, dtype=torch.uint8) if record_z else None
    vrec = torch.empty(steps, batch, m, dtype=dtype) if record_v else None
    fn = lib.lif_events_f32 if dtype == torch.float32 else lib.lif_events_f64
    n_threads = max(1, min(batch, threads or torch.get_num_threads()))
    bounds = [batch * k // n_threads for k in range(n_threads + 1)]

    def part(k: int) -> int:
        scratch = torch.empty(m, dtype=dtype)
        active = torch.empty(max(n_in, 1), dtype=torch.int64)
        return fn(steps, batch, n_in, m, bounds[k], bounds[k + 1], x.data_ptr(), wt.data_ptr(),
                  v.data_ptr(), i.data_ptr(), c_mem, c_syn, v_leak, v_th, v_reset,
                  z.data_ptr() if z is not None else None, vrec.data_ptr() if vrec is not None else None,
                  scratch.data_ptr(), active.data_ptr())

    if n_threads == 1 or steps == 0:
        count = part(0) if steps else 0
    else:  # ctypes releases the GIL: batch elements run in parallel
        with ThreadPoolExecutor(n_threads) as pool:
            count = sum(pool.map(part, range(n_threads)))
    simulate_lif_events.last_count = int(count)
    return (z.view(torch.bool) if z is not None else None), vrec


def _run_torch(x, wt, v, i, p: neurons.LIFParameters, dt: float, block: int, record_v: bool):
    """The torch backend: ``(z, vrec)``; the final state is written into ``v`` and ``i``."""
    steps, batch, n_in = x.shape
    m = wt.shape[1]
    z = torch.zeros(steps, batch, m, dtype=torch.bool)
    vrec = torch.empty(steps, batch, m, dtype=v.dtype) if record_v else None
    state = neurons.LIFState(v, i)
    flat = x.reshape(steps * batch, n_in)
    for t0 in range(0, steps, block):
        t1 = min(steps, t0 + block)
        rows, cols = torch.nonzero(flat[t0 * batch:t1 * batch], as_tuple=True)
        cur = torch.zeros((t1 - t0) * batch, m, dtype=v.dtype)
        if len(rows):
            cur.index_add_(0, rows, wt.index_select(0, cols))  # only the active rows of W^T
        cur = cur.view(t1 - t0, batch, m)
        for t in range(t1 - t0):
            spikes, state = neurons.lif_step_events(cur[t], state, p, dt)
            if spikes is not None:
                z[t0 + t] = spikes
            if vrec is not None:
                vrec[t0 + t] = state.v
    v.copy_(state.v)
    i.copy_(state.i)
    return z, vrec
