"""Describe the machine a benchmark ran on (every benchmark prints this first).

Usage from a script in ``benchmarks/``::

    from _machine import machine_info, print_machine

    info = print_machine()  # prints a few lines, returns the dict (put it in the JSON output)
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

__all__ = ["machine_info", "format_machine", "print_machine"]

_REPO = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(_REPO), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (other work on the machine skews timings)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info() -> dict:
    """Platform, CPU model, core counts, library versions, date (UTC), git commit and load, as a dict."""
    import numpy
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git_commit(),
        "load_average": _load_average(),
    }


def format_machine(info: dict) -> str:
    """A few human-readable lines describing ``info`` (from :func:`machine_info`)."""
    lines = [
        f"machine : {info['platform']}",
        f"cpu     : {info['cpu']} ({info['cpus_usable']} usable of {info['cpu_count']} cores, "
        f"torch threads {info['torch_threads']})",
        f"software: python {info['python']}, torch {info['torch']}, numpy {info['numpy']}"
        + (f", cuda device {info['cuda']}" if info.get("cuda") else ""),
        f"date    : {info['date']}" + (f", commit {info['commit']}" if info.get("commit") else ""),
    ]
    if info.get("load_average"):
        lines.append("load    : " + " ".join(f"{v:.2f}" for v in info["load_average"])
                     + " (1/5/15 min load average when measured)")
    return "\n".join(lines)


def print_machine() -> dict:
    """Print the machine description and return it as a dict."""
    info = machine_info()
    print(format_machine(info), flush=True)
    return info


if __name__ == "__main__":
    print_machine()
