"""The compiled kernels: built ahead of time into one extension module, or compiled by numba on first use.

The hot loops (capture scanning, decoding, both endpoints' state machines, Zeek's bookkeeping, Wireshark's
sequence analysis) are written once, in numba's subset of Python, and marked here: `kernel` for every compiled
function, `entry` (with its type signature) for the few that Python calls.

`make kernels` (or `python -m analyzer.native`; `make run`, `make test` and `make bench` do it) compiles the
entry points, and every kernel they call, into analyzer/_kernels*.so with numba's ahead-of-time compiler. That module loads in about a millisecond and needs
neither numba nor LLVM at run time, which saves about a second and 110 MB on every run. It records a digest
of the kernel sources; if the sources changed since (or TCPA_JIT=1 is set, or the module was never built),
numba compiles the kernels on first use instead (cached in __pycache__), with the same results.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

HERE = Path(__file__).resolve().parent
# Every module a kernel's code or constants come from: the compiled module is stale when one of them changes.
SOURCES = ("native", "capture", "decode", "engine", "flows", "layout", "segments", "seqspace", "sequence", "splice",
           "tcpstate", "zeekconn")
MODULE = "_kernels"


def digest() -> int:
    """The kernel sources' digest (60 bits of their SHA-256), which a compiled module must match."""
    h = hashlib.sha256()
    for name in SOURCES:
        h.update((HERE / f"{name}.py").read_bytes())
    return int(h.hexdigest()[:15], 16)


def _compiled() -> ModuleType | None:
    if os.environ.get("TCPA_JIT") == "1":
        return None
    try:
        module = importlib.import_module(f"{__package__}.{MODULE}")
    except ImportError:
        return None
    if module.source_digest() != digest():
        print("tcpa: the compiled kernels are older than their source; compiling with numba instead "
              "(`make kernels` rebuilds them)", file=sys.stderr)
        return None
    return module


COMPILED = _compiled()
ENTRIES: list[tuple[str, str, Callable[..., Any]]] = []  # (exported name, signature, kernel) for the build


def kernel(inline: bool = False) -> Callable[[F], F]:
    """Mark a compiled function (inline: numba inlines it into its callers)."""
    def mark(fn: F) -> F:
        if COMPILED is not None:
            return fn  # only the entry points run, from the compiled module
        import numba

        opts: dict[str, Any] = {"inline": "always"} if inline else {}
        return numba.njit(cache=True, nogil=True, **opts)(fn)  # type: ignore[no-any-return]
    return mark


def entry(args: str, returns: str = "void") -> Callable[[F], F]:
    """Mark a kernel that Python calls, with the one signature it is compiled for ahead of time.

    `args` in numba's notation: `i8` a 64-bit int, `b1` a bool, `u1[::1]` a C-contiguous uint8 array,
    `i8[:, ::1]` a C-contiguous 2-D int64 array. The compiled module does not check what it is given (a
    wrong array type would be read as raw memory), so its entry points are wrapped in a check that raises
    TypeError instead.
    """
    specs = [_spec(a) for a in _split(args)]

    def mark(fn: F) -> F:
        name = f"{fn.__module__.rsplit('.', 1)[-1]}_{fn.__name__}"
        if COMPILED is not None:
            return _checked(getattr(COMPILED, name), name, specs)  # type: ignore[return-value]
        jitted = kernel()(fn)
        ENTRIES.append((name, f"{returns}({args})", jitted))
        return jitted
    return mark


_DTYPES = {"b1": "bool", "i1": "int8", "i2": "int16", "i4": "int32", "i8": "int64", "u1": "uint8",
           "u2": "uint16", "u4": "uint32", "u8": "uint64"}


def _split(args: str) -> list[str]:
    """The arguments of a signature: `i8, u1[::1], i8[:, ::1]` -> ["i8", "u1[::1]", "i8[:, ::1]"]."""
    return re.findall(r"\w+(?:\[[^\]]*\])?", args)


def _spec(arg: str) -> tuple[str, int] | None:
    """An array argument's dtype name and dimensions; None for a scalar."""
    if "[" not in arg:
        return None
    if not arg.endswith("::1]"):
        raise ValueError(f"kernel array arguments are C-contiguous (x[::1], x[:, ::1]): {arg}")
    return _DTYPES[arg[: arg.index("[")]], arg.count(":") - 1


def _checked(fn: Callable[..., Any], name: str, specs: list[tuple[str, int] | None]) -> Callable[..., Any]:
    import numpy as np

    want = [(np.dtype(s[0]), s[1]) if s else None for s in specs]

    def call(*args: Any) -> Any:
        if len(args) != len(want):
            raise TypeError(f"{name}: {len(args)} arguments given, {len(want)} expected")
        for i, (a, w) in enumerate(zip(args, want)):
            if w is not None and not (isinstance(a, np.ndarray) and a.dtype == w[0] and a.ndim == w[1]
                                      and a.flags.c_contiguous):
                got = f"{a.dtype}[{a.ndim}d, {'C' if a.flags.c_contiguous else 'strided'}]" \
                    if isinstance(a, np.ndarray) else type(a).__name__
                raise TypeError(f"{name}: argument {i} is {got}, expected a C-contiguous {w[0]} array of "
                                f"{w[1]} dimension(s)")
        return fn(*args)

    call.__name__ = call.__qualname__ = name
    return call


def build(out_dir: Path = HERE) -> Path:
    """Compile every entry point (and the kernels they call) into analyzer/_kernels*.so."""
    if COMPILED is not None or os.environ.get("TCPA_JIT") != "1":
        raise RuntimeError("build() runs with TCPA_JIT=1 (python -m analyzer.native sets it)")
    import warnings

    pycc_compiler: Any = importlib.import_module("numba.pycc.compiler")
    flags: Any = importlib.import_module("numba.core.compiler").Flags

    class _ReleaseGil(flags):  # type: ignore[misc]
        """Exported functions drop the GIL as numba's nogil=True ones do, so decoding overlaps the tracker."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.release_gil = True

    pycc_compiler.Flags = _ReleaseGil
    with warnings.catch_warnings():  # pycc is "pending deprecation"; it is the only AOT compiler numba has
        warnings.simplefilter("ignore")
        cc: Any = importlib.import_module("numba.pycc").CC(MODULE)
    from . import capture, decode, engine, flows, sequence, splice  # noqa: F401 - their entries register themselves

    cc.output_dir = str(out_dir)
    cc.verbose = False
    cc.target_cpu = "host"  # built where it runs (make), like the JIT: this CPU's instructions
    cc.use_nrt = False
    for name, signature, fn in ENTRIES:
        cc.export(name, signature)(fn.py_func)  # type: ignore[attr-defined]
    stamp = digest()

    def source_digest() -> int:
        return stamp

    cc.export("source_digest", "i8()")(source_digest)
    cc.compile()
    return next(out_dir.glob(f"{MODULE}.*.so"))


def main() -> None:
    """Build the compiled module, in a fresh process whose kernels are numba dispatchers compiled from the
    source (numba's on-disk cache misses edits to kernels called from other files)."""
    if os.environ.get("TCPA_KERNEL_BUILD") == "1":
        print(f"compiled {build()}")
        return
    cache = tempfile.mkdtemp(prefix="tcpa-kernels-")
    env = {**os.environ, "TCPA_JIT": "1", "TCPA_KERNEL_BUILD": "1", "NUMBA_CACHE_DIR": cache}
    try:
        code = subprocess.run([sys.executable, "-c", "from analyzer import native; native.main()"], env=env,
                              check=False).returncode
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
