"""Speed of neuro.numerics: posit encode/decode throughput and the exact ``Quire.add_outer`` reduction.

Measures, in one run:

1. ``fmt.encode`` / ``fmt.decode`` throughput (values per second) for posit8, posit16, posit32 and
   bposit16 on 10**6 values (best of 3), against a per-element Python loop over SoftPosit
   (``softposit.posit_2(x, n)`` for posit8/16, ``softposit.posit32`` for posit32; 2*10**4 elements
   timed and extrapolated).  SoftPosit has no b-posits, so bposit16 is compared with the posit16
   loop (marked ``*``).  The SoftPosit results are also checked bit for bit against ours.
2. ``Quire(POSIT16, (M, N)).add_outer(post, pre)`` (exact ``post.T @ pre``) against float32
   ``torch.matmul(post.T, pre)`` of the same float32 inputs, for (K, M, N) = (4096, 256, 256) and
   (65536, 128, 128), with two kinds of input: ``spikes`` (pre 0/1 at ~5 % density, post
   ``randn * 0.01``) and ``traces`` (pre uniform in [0, 1], post ``randn * 0.01``).  The two are
   timed in alternation (one add_outer, then matmuls for as long), so that both see the same
   moments of a shared machine's load.  Also reports how far the float32 matmul lies from the
   exact sum.

Usage::

    python benchmarks/bench_numerics.py                 # full run (a few minutes on 2 cores)
    python benchmarks/bench_numerics.py --quick         # small sizes (seconds), used by the smoke test
    python benchmarks/bench_numerics.py --json out.json # also write every figure as JSON
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _p in (str(_HERE), str(_HERE.parent)):  # _machine, and neuro when it is not installed
    if _p not in sys.path:
        sys.path.insert(0, _p)

import softposit  # noqa: E402
import torch  # noqa: E402
from _machine import print_machine  # noqa: E402

from neuro.numerics import BPOSIT16, POSIT8, POSIT16, POSIT32, PositFormat, Quire  # noqa: E402

SEED = 20240501
CODEC_FORMATS: list[tuple[PositFormat, int, bool]] = [
    # (format, SoftPosit width used as reference, is the reference the same format?)
    (POSIT8, 8, True),
    (POSIT16, 16, True),
    (POSIT32, 32, True),
    (BPOSIT16, 16, False),
]
FULL = {
    "codec_n": 10**6,
    "softposit_n": 2 * 10**4,
    "outer_shapes": [(4096, 256, 256), (65536, 128, 128)],
    "min_total_s": 1.0,  # fast calls are repeated (>= REPEATS times) until this much time is spent
}
QUICK = {
    "codec_n": 10**4,
    "softposit_n": 2 * 10**3,
    "outer_shapes": [(512, 32, 32), (4096, 16, 16)],
    "min_total_s": 0.05,
}
ENCODE_INPUTS = ("normal", "wide")
OUTER_KINDS = ("spikes", "spikes_bool", "traces")
REPEATS = 3
BUDGET_S = 30.0  # stop repeating a measurement once it has used this much time (>= 1 run)


class Progress:
    """Numbered progress lines, one per measurement."""

    def __init__(self, total: int):
        self.total = total
        self.done = 0
        self.t0 = time.perf_counter()

    def __call__(self, what: str, seconds: float, runs: int, note: str = "") -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.t0
        width = len(str(self.total))
        note = f"; {note}" if note else ""
        print(
            f"  [{self.done:{width}d}/{self.total}] {what:<46s} {_fmt_s(seconds):>9s}"
            f"  (best of {runs}{note}; {elapsed:.1f} s elapsed)",
            flush=True,
        )


def best_time(
    fn: Callable[[], object],
    repeats: int = REPEATS,
    budget_s: float = BUDGET_S,
    min_total_s: float = 0.0,
    max_runs: int = 200,
) -> tuple[float, int, object]:
    """``(best wall time, number of runs, last result)`` of ``fn()`` over ``repeats`` runs.

    Fewer runs are made once ``budget_s`` has been spent (always at least one).

    Very fast calls are repeated until ``min_total_s`` has been spent (up to ``max_runs``), so that a
    millisecond GEMM is not timed from one noisy sample.
    """
    best = math.inf
    total = 0.0
    runs = 0
    result = None
    while runs < max_runs:
        t = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t
        best = min(best, dt)
        total += dt
        runs += 1
        if runs >= repeats and total >= min_total_s:
            break
        if total >= budget_s:
            break
    return best, runs, result


def interleaved(
    fast: Callable[[], object], slow: Callable[[], object], min_total_s: float, rounds: int = 2 * REPEATS
) -> tuple[float, int, float, int, object]:
    """Best times of ``fast`` and ``slow`` measured in alternation, so that both see the same
    moments of a shared machine's load: each round times ``slow`` once, then ``fast`` at least 5
    times and for at least as long (and ``min_total_s / rounds``).  Stops after ``rounds`` rounds
    or ``BUDGET_S``.  Returns ``(best fast, fast runs, best slow, slow runs, last slow result)``."""
    best_f = best_s = math.inf
    runs_f = runs_s = 0
    spent = 0.0
    result = None
    while runs_s < rounds and spent < BUDGET_S:
        t = time.perf_counter()
        result = slow()
        dt = time.perf_counter() - t
        best_s, runs_s = min(best_s, dt), runs_s + 1
        t_round = time.perf_counter()
        for i in itertools.count():  # the first calls may wake sleeping worker threads
            t = time.perf_counter()
            fast()
            best_f, runs_f = min(best_f, time.perf_counter() - t), runs_f + 1
            if i >= 4 and time.perf_counter() - t_round >= max(dt, min_total_s / rounds):
                break
        spent += dt + time.perf_counter() - t_round
    return best_f, runs_f, best_s, runs_s, result


def _fmt_s(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def _fmt_rate(per_s: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if per_s >= scale:
            return f"{per_s / scale:.2f} {unit}"
    return f"{per_s:.0f} "


# --------------------------------------------------------------------------------- inputs
def codec_inputs(kind: str, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` float64 values to encode.

    ``normal``: standard normal (weights, gradients).  ``wide``: random sign, magnitude log-uniform
    in [2**-40, 2**40] (beyond posit8's range: exercises saturation), one value in 64 is zero.
    """
    if kind == "normal":
        return torch.randn(n, generator=gen, dtype=torch.float64)
    if kind == "wide":
        mag = torch.exp2(torch.rand(n, generator=gen, dtype=torch.float64) * 80 - 40)
        sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).to(torch.float64)
        x = mag * sign
        x[::64] = 0.0
        return x
    raise ValueError(f"unknown input kind {kind!r}")


def pattern_inputs(fmt: PositFormat, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` uniformly random bit patterns of ``fmt`` (int64)."""
    return torch.randint(0, 1 << fmt.nbits, (n,), generator=gen, dtype=torch.int64)


def outer_inputs(kind: str, k: int, m: int, n: int, gen: torch.Generator):
    """float32 ``post (K, M)`` and ``pre (K, N)`` for an add_outer measurement."""
    post = torch.randn(k, m, generator=gen) * 0.01
    if kind in ("spikes", "spikes_bool"):
        pre = (torch.rand(k, n, generator=gen) < 0.05).to(torch.float32)
    elif kind == "traces":
        pre = torch.rand(k, n, generator=gen)
    else:
        raise ValueError(f"unknown input kind {kind!r}")
    return post.contiguous(), pre.contiguous()


# --------------------------------------------------------------------------------- SoftPosit loops
def softposit_codec(width: int):
    """(encode, decode) per-element functions of SoftPosit posit<width, 2>."""
    if width == 32:

        def enc(v: float) -> int:
            return softposit.posit32(v).v.v

        def dec(b: int) -> float:
            return float(softposit.posit32(bits=b))
    else:
        shift = 32 - width

        def enc(v: float) -> int:
            return softposit.posit_2(v, width).v.v >> shift

        def dec(b: int) -> float:
            return float(softposit.posit_2(bits=b, x=width))

    return enc, dec


def softposit_name(width: int) -> str:
    return "softposit.posit32" if width == 32 else f"softposit.posit_2(x, {width})"


# --------------------------------------------------------------------------------- measurements
def bench_codec(cfg: dict, progress: Progress) -> list[dict]:
    """One row per (format, operation, input kind): our throughput, SoftPosit's, the ratio."""
    gen = torch.Generator().manual_seed(SEED)
    n, n_sp = cfg["codec_n"], cfg["softposit_n"]
    floats = {kind: codec_inputs(kind, n, gen) for kind in ENCODE_INPUTS}
    sp_cache: dict[tuple[int, str], dict] = {}
    rows = []
    for fmt, width, same in CODEC_FORMATS:
        enc, dec = softposit_codec(width)
        patterns = pattern_inputs(fmt, n, gen)
        jobs = [("encode", kind, floats[kind]) for kind in ENCODE_INPUTS] + [("decode", "patterns", patterns)]
        for op, kind, data in jobs:
            fn = fmt.encode if op == "encode" else fmt.decode
            fn(data[:4096])  # warm-up (builds any lookup tables)
            t, runs, _ = best_time(lambda fn=fn, data=data: fn(data), min_total_s=cfg["min_total_s"])
            progress(f"{op} {fmt.name} ({n:.0e} {kind})", t, runs)

            key = (width, kind)
            if key not in sp_cache:
                if op == "encode":
                    sample = data[:n_sp].tolist()
                    loop = enc
                else:  # SoftPosit decodes NaR to inf: time real patterns only
                    sample = [b for b in data[: 2 * n_sp].tolist() if b != 1 << (width - 1)][:n_sp]
                    loop = dec
                t_sp, runs_sp, out = best_time(lambda loop=loop, sample=sample: [loop(v) for v in sample])
                progress(f"SoftPosit {op} loop {width}-bit ({n_sp:.0e} {kind})", t_sp, runs_sp)
                sp_cache[key] = {"seconds": t_sp, "n": len(sample), "in": sample, "out": out}
            sp = sp_cache[key]
            agree = None
            if same:  # our results on the SoftPosit sample, bit for bit
                if op == "encode":
                    ours = fmt.encode(torch.tensor(sp["in"], dtype=torch.float64)).tolist()
                else:
                    ours = fmt.decode(torch.tensor(sp["in"], dtype=torch.int64)).tolist()
                agree = ours == sp["out"]
            rate, sp_rate = n / t, sp["n"] / sp["seconds"]
            rows.append(
                {
                    "format": fmt.name,
                    "op": op,
                    "inputs": kind,
                    "n": n,
                    "seconds": t,
                    "runs": runs,
                    "values_per_s": rate,
                    "softposit_reference": softposit_name(width),
                    "softposit_same_format": same,
                    "softposit_n": sp["n"],
                    "softposit_seconds": sp["seconds"],
                    "softposit_values_per_s": sp_rate,
                    "speedup": rate / sp_rate,
                    "agrees_with_softposit": agree,
                }
            )
    return rows


def bench_outer(cfg: dict, progress: Progress) -> list[dict]:
    gen = torch.Generator().manual_seed(SEED + 1)
    fmt = POSIT16
    rows = []
    for k, m, n in cfg["outer_shapes"]:
        for kind in OUTER_KINDS:
            post, pre = outer_inputs(kind, k, m, n, gen)
            pre_q = pre.bool() if kind == "spikes_bool" else pre  # bool = exact spike path
            shape = f"K={k} M={m} N={n}"
            post_t = post.T.contiguous()  # what a caller would hold; the transpose is not timed
            torch.matmul(post_t, pre)  # warm-up

            def run(post=post, pre=pre_q, m=m, n=n) -> Quire:
                q = Quire(fmt, (m, n))
                q.add_outer(post, pre)
                return q

            t0 = time.perf_counter()
            run()  # a full-size warm-up: first calls pay for allocations and caches
            t_first = time.perf_counter() - t0
            t_mm, r_mm, t_q, r_q, q = interleaved(
                lambda a=post_t, b=pre: torch.matmul(a, b), run, cfg["min_total_s"]
            )
            progress(f"float32 matmul  {kind:11s} {shape}", t_mm, r_mm)
            progress(f"quire add_outer {kind:11s} {shape}", t_q, r_q, f"first call {_fmt_s(t_first)}")
            t0 = time.perf_counter()
            exact = q.to_float()
            bits = q.to_bits()
            t_read = time.perf_counter() - t0

            # how far plain arithmetic lies from the exact sum of the same (posit16-rounded) terms
            ref64 = torch.matmul(fmt.quantize(post).T, fmt.quantize(pre))
            mm32 = torch.matmul(fmt.quantize(post).float().T, fmt.quantize(pre).float()).double()
            scale = exact.abs().max().item() or 1.0
            rows.append(
                {
                    "format": fmt.name,
                    "inputs": kind,
                    "K": k,
                    "M": m,
                    "N": n,
                    "pre_density": float((pre != 0).float().mean()),
                    "matmul_f32_s": t_mm,
                    "matmul_runs": r_mm,
                    "add_outer_s": t_q,
                    "add_outer_runs": r_q,
                    "add_outer_first_call_s": t_first,
                    "ratio": t_q / t_mm,
                    "readout_s": t_read,
                    "quire_nbytes": q.nbytes,
                    "f64_matmul_max_err": (ref64 - exact).abs().max().item() / scale,
                    "f32_matmul_max_err": (mm32 - exact).abs().max().item() / scale,
                    "rounded_equals_f64_rounded": bool((fmt.encode(ref64) == bits).all()),
                }
            )
    return rows


# --------------------------------------------------------------------------------- report
def print_report(codec: list[dict], outer: list[dict]) -> None:
    print("\nEncode / decode throughput (values/s); ratio = ours / SoftPosit per-element Python loop")
    head = (
        f"{'format':<9s} {'op':<7s} {'inputs':<9s} {'ours':>9s} {'SoftPosit':>10s} {'ratio':>8s}  "
        f"{'SoftPosit reference':<26s} {'bit-exact'}"
    )
    print(head)
    print("-" * len(head))
    for r in codec:
        star = " " if r["softposit_same_format"] else "*"
        agree = {True: "yes", False: "NO", None: "n/a"}[r["agrees_with_softposit"]]
        print(
            f"{r['format']:<9s} {r['op']:<7s} {r['inputs']:<9s} {_fmt_rate(r['values_per_s']):>9s} "
            f"{_fmt_rate(r['softposit_values_per_s']):>10s} {r['speedup']:7.1f}x{star} "
            f"{r['softposit_reference']:<26s} {agree}"
        )
    print("inputs: normal = randn float64; wide = log-uniform magnitudes 2^-40..2^40, random sign,")
    print("1/64 zeros; patterns = uniformly random bit patterns.  SoftPosit: per-element loop over a Python")
    print("list, timed on a slice and extrapolated; bit-exact = our output equals SoftPosit's on that slice.")
    if any(not r["softposit_same_format"] for r in codec):
        print("* SoftPosit has no b-posits: compared with its posit<16,2> loop.")

    print("\nExact reduction sum_k post[k]^T pre[k]: Quire(posit16).add_outer vs float32 torch.matmul")
    head = (
        f"{'K':>6s} {'M':>4s} {'N':>4s} {'inputs':<11s} {'matmul f32':>10s} {'add_outer':>10s} "
        f"{'ratio':>8s} {'readout':>9s} {'f32 err':>8s} {'f64 err':>8s}"
    )
    print(head)
    print("-" * len(head))
    for r in outer:
        print(
            f"{r['K']:>6d} {r['M']:>4d} {r['N']:>4d} {r['inputs']:<11s} {_fmt_s(r['matmul_f32_s']):>10s} "
            f"{_fmt_s(r['add_outer_s']):>10s} {r['ratio']:7.1f}x {_fmt_s(r['readout_s']):>9s} "
            f"{r['f32_matmul_max_err']:8.1e} {r['f64_matmul_max_err']:8.1e}"
        )
    print(
        "inputs: spikes = pre 0/1 (~5 % density, float32) x post randn*0.01; spikes_bool = the same spikes "
        "passed as a bool tensor;\ntraces = pre U[0,1] x post randn*0.01."
    )
    print("ratio = add_outer / matmul time; readout = to_float + to_bits once; err = max |matmul - exact| /")
    print("max |exact| over the (M, N) result, same posit16-rounded inputs (0 means the matmul was exact).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (a few seconds)")
    parser.add_argument("--json", metavar="PATH", help="also write all figures to this JSON file")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL

    print("bench_numerics" + (" --quick" if args.quick else ""))
    info = print_machine()
    n_sp_widths = len({w for _, w, _ in CODEC_FORMATS})
    per_format = len(ENCODE_INPUTS) + 1
    total = (per_format * (len(CODEC_FORMATS) + n_sp_widths)) + 2 * len(OUTER_KINDS) * len(
        cfg["outer_shapes"]
    )
    progress = Progress(total)
    print(
        f"\nmeasuring ({total} measurements; best of >= {REPEATS} runs, fast calls repeated for "
        f">= {cfg['min_total_s']:g} s, slow ones stopped after {BUDGET_S:.0f} s)",
        flush=True,
    )
    t0 = time.perf_counter()
    codec = bench_codec(cfg, progress)
    outer = bench_outer(cfg, progress)
    wall = time.perf_counter() - t0
    print_report(codec, outer)
    load = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    print(f"\ntotal benchmark time {wall:.1f} s" + (f"; load average at the end {load}" if load else ""))

    if args.json:
        out = {
            "benchmark": "bench_numerics",
            "quick": bool(args.quick),
            "machine": info,
            "config": {"repeats": REPEATS, "budget_s": BUDGET_S, "encode_inputs": list(ENCODE_INPUTS), **cfg},
            "codec": codec,
            "add_outer": outer,
            "wall_s": wall,
            "load_average_end": load,
        }
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
