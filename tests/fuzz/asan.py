"""analyzer/accel/_fast.c built with AddressSanitizer and UndefinedBehaviorSanitizer, apart from the ordinary build, and
the environment a worker process needs to load it (the ASan runtime preloaded: the Python interpreter itself is
not built with it)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "analyzer" / "accel" / "_fast.c"
BUILD = REPO / "build" / "asan"
FLAGS = ("-shared", "-fPIC", "-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=all", "-Wall", "-Wextra", "-Wno-unused-parameter")
# Sanitizer reports abort the process (the campaign sees it die and reads the report from its stderr). Leaks
# are not looked for: the interpreter keeps its objects to the end. A failed huge allocation is a NULL (numpy's
# MemoryError), as without ASan, not a report.
ASAN_OPTIONS = "detect_leaks=0:abort_on_error=1:allocator_may_return_null=1:handle_abort=0:symbolize=1"
UBSAN_OPTIONS = "halt_on_error=1:abort_on_error=1:print_stacktrace=1"
ENV_MODULE = "SYNLENS_FUZZ_FAST"  # the path of the sanitized module a worker loads as analyzer._fast


def compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise RuntimeError("no C compiler (gcc) found to build analyzer/accel/_fast.c with sanitizers")
    return cc


def runtime(cc: str | None = None) -> str:
    """The libraries to preload into a worker: the ASan runtime the compiler links against, and the C++ runtime
    after it (matplotlib's C++ modules throw exceptions; ASan wraps __cxa_throw when it starts, and finds the
    real one only if libstdc++ is loaded by then)."""
    cc = cc or compiler()
    paths = []
    for name in ("libasan.so", "libstdc++.so.6"):
        path = subprocess.run([cc, f"-print-file-name={name}"], capture_output=True, text=True, check=True).stdout.strip()
        if not os.path.isabs(path) or not os.path.exists(path):
            raise RuntimeError(f"{cc} has no {name} (the AddressSanitizer runtime needs it)")
        paths.append(os.path.realpath(path))
    return " ".join(paths)


def build(out: Path = BUILD) -> Path:
    """Build (once per version of the source and flags) and return the sanitized module's path."""
    cc = compiler()
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join((cc, *FLAGS)).encode()).hexdigest()[:16]
    target = out / key / f"_fast{sysconfig.get_config_var('EXT_SUFFIX')}"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    include = sysconfig.get_paths()["include"]
    partial = target.with_suffix(".tmp")
    subprocess.run([cc, *FLAGS, f"-I{include}", str(SOURCE), "-o", str(partial)], check=True, capture_output=True)
    partial.rename(target)
    return target


def environment(module: Path) -> dict[str, str]:
    """The environment of a worker that runs with the sanitized module."""
    env = dict(os.environ)
    env["LD_PRELOAD"] = runtime()
    env["ASAN_OPTIONS"] = ASAN_OPTIONS
    env["UBSAN_OPTIONS"] = UBSAN_OPTIONS
    env[ENV_MODULE] = str(module)
    return env


def load_if_asked() -> ModuleType | None:
    """In a worker: the sanitized module named by the environment, made analyzer._fast before analyzer.accel
    imports it (None when none is named). Raises when it cannot be the one analyzer uses."""
    path = os.environ.get(ENV_MODULE)
    if not path:
        return None
    spec = importlib.util.spec_from_file_location("analyzer.accel._fast", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["analyzer.accel._fast"] = module
    from analyzer import accel as compiled

    if compiled.FAST is not module:
        raise RuntimeError(f"analyzer.accel did not take the sanitized module {path} (API {getattr(module, 'API', None)})")
    return module
