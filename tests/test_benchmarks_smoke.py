"""Smoke test: ``benchmarks/bench_numerics.py --quick`` runs and writes well-formed JSON figures."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "bench_numerics.py"

CODEC_KEYS = {
    "format", "op", "inputs", "n", "seconds", "values_per_s", "softposit_reference", "softposit_n",
    "softposit_seconds", "softposit_values_per_s", "speedup", "agrees_with_softposit",
}
OUTER_KEYS = {
    "format", "inputs", "K", "M", "N", "matmul_f32_s", "add_outer_s", "ratio", "readout_s",
    "f32_matmul_max_err", "f64_matmul_max_err", "rounded_equals_f64_rounded",
}
POSITIVE_CODEC = ["n", "seconds", "values_per_s", "softposit_n", "softposit_seconds",
                  "softposit_values_per_s", "speedup"]
POSITIVE_OUTER = ["matmul_f32_s", "add_outer_s", "ratio", "readout_s"]


def _positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "numerics.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=env,
    )
    assert proc.returncode == 0, f"benchmark failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout, json.loads(out.read_text(encoding="utf-8"))


def test_quick_run_prints_machine_and_tables(quick_run):
    stdout, _ = quick_run
    for needle in ("cpu     :", "torch", "Encode / decode throughput", "add_outer", "total benchmark time"):
        assert needle in stdout


def test_quick_json_has_machine(quick_run):
    _, data = quick_run
    assert data["quick"] is True
    for key in ("platform", "cpu", "cpu_count", "torch", "numpy", "date"):
        assert data["machine"][key]
    assert _positive(data["wall_s"])
    assert data["wall_s"] < 30, "the --quick run should take seconds"


def test_quick_json_codec(quick_run):
    _, data = quick_run
    rows = data["codec"]
    seen = {(r["format"], r["op"]) for r in rows}
    for fmt in ("posit8", "posit16", "posit32", "bposit16"):
        assert {(fmt, "encode"), (fmt, "decode")} <= seen, fmt
    for r in rows:
        assert CODEC_KEYS <= r.keys(), CODEC_KEYS - r.keys()
        for key in POSITIVE_CODEC:
            assert _positive(r[key]), (r["format"], r["op"], key, r[key])
        if r["format"] != "bposit16":  # SoftPosit has no b-posits
            assert r["agrees_with_softposit"] is True, (r["format"], r["op"], r["inputs"])


def test_quick_json_add_outer(quick_run):
    _, data = quick_run
    rows = data["add_outer"]
    assert {r["inputs"] for r in rows} == {"spikes", "spikes_bool", "traces"}
    assert len(rows) == 3 * len(data["config"]["outer_shapes"])
    for r in rows:
        assert OUTER_KEYS <= r.keys(), OUTER_KEYS - r.keys()
        for key in POSITIVE_OUTER:
            assert _positive(r[key]), (r["inputs"], key, r[key])
        assert r["format"] == "posit16"
        assert r["rounded_equals_f64_rounded"] is True
        assert 0 <= r["f64_matmul_max_err"] < 1e-12
