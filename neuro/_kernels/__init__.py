"""Small C kernels compiled on first use with the system C compiler and loaded through ctypes.

The sources ship in this folder.  :func:`load` compiles ``NAME.c`` into a shared library in a
per-user cache folder (``$NEURO_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/neuro/kernels``, else
``~/.cache/neuro/kernels``), named by a hash of the source, the compiler flags, the compiler's
identity and the machine, so an edited source or another compiler never reuses a stale build.  The
library is written to a temporary file and renamed into place (atomic: concurrent first uses are
safe).  Without a working compiler (or with ``NEURO_NO_KERNELS=1``) :func:`load` returns None and
the caller falls back to its torch implementation.

Flags: ``-O3 -shared -fPIC -ffp-contract=off -fno-fast-math``: no fused multiply-adds and no
reassociation, so the kernels round every operation as torch's element-wise kernels do (the
results are bit-identical to the torch reference; tests/test_simulate.py checks it).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

__all__ = ["FLAGS", "cache_dir", "compiler", "load", "library_path"]

FLAGS = ("-O3", "-shared", "-fPIC", "-ffp-contract=off", "-fno-fast-math", "-std=c99")
_HERE = Path(__file__).resolve().parent
_LOCK = threading.Lock()
_LOADED: dict[str, ctypes.CDLL | None] = {}
_ERRORS: dict[str, str] = {}


def cache_dir() -> Path:
    """Folder of the compiled kernels."""
    if os.environ.get("NEURO_KERNEL_CACHE"):
        return Path(os.environ["NEURO_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "neuro" / "kernels"


def compiler() -> str | None:
    """The C compiler: ``$CC``, else the first of cc, gcc, clang on the PATH (None: no compiler)."""
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc.split()[0]) and cc
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return name
    return None


def _compiler_identity(cc: str) -> str:
    try:
        out = subprocess.run([*cc.split(), "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return cc


def library_path(name: str, cc: str | None = None) -> Path:
    """Where the compiled ``name`` kernel lives (or will live) in the cache."""
    cc = cc or compiler() or "cc"
    source = (_HERE / f"{name}.c").read_bytes()
    key = hashlib.sha256()
    for part in (source, " ".join(FLAGS).encode(), _compiler_identity(cc).encode(),
                 platform.machine().encode(), platform.system().encode()):
        key.update(part)
        key.update(b"\0")
    return cache_dir() / f"{name}-{key.hexdigest()[:16]}.so"


def _build(name: str, cc: str) -> Path:
    target = library_path(name, cc)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [*cc.split(), *FLAGS, "-o", tmp, str(_HERE / f"{name}.c")]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr.strip()}")
        os.replace(tmp, target)  # atomic: a concurrent build of the same key writes the same bytes
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load(name: str) -> ctypes.CDLL | None:
    """The compiled kernel ``name`` (compiled on first use), or None when it cannot be built;
    :func:`error` then says why."""
    with _LOCK:
        if name in _LOADED:
            return _LOADED[name]
        lib = None
        if os.environ.get("NEURO_NO_KERNELS", "") not in ("", "0"):
            _ERRORS[name] = "disabled by NEURO_NO_KERNELS"
        elif not (_HERE / f"{name}.c").exists():
            _ERRORS[name] = f"source {name}.c is not installed with the package"
        else:
            cc = compiler()
            if cc is None:
                _ERRORS[name] = "no C compiler found (set CC, or install cc/gcc/clang)"
            else:
                try:
                    lib = ctypes.CDLL(str(_build(name, cc)))
                except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                    _ERRORS[name] = str(exc)
        _LOADED[name] = lib
        return lib


def error(name: str) -> str | None:
    """Why :func:`load` returned None for ``name`` (None when it did not)."""
    return _ERRORS.get(name)
