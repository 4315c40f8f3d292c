"""analyzer/accel's compiled modules (_reader.c, _sort.c) built with AddressSanitizer and UndefinedBehaviorSanitizer,
apart from the ordinary build, and the environment a worker process needs to load them (the ASan runtime
preloaded: the Python interpreter itself is not built with it)."""

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
ACCEL = REPO / "analyzer" / "accel"
SOURCES = {"_reader": ACCEL / "_reader.c", "_sort": ACCEL / "_sort.c"}  # module → source
HEADERS = (ACCEL / "_buffers.h",)
BUILD = REPO / "build" / "asan"
FLAGS = ("-shared", "-fPIC", "-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=all", "-Wall", "-Wextra", "-Wno-unused-parameter")
# Sanitizer reports abort the process (the campaign sees it die and reads the report from its stderr). Leaks
# are not looked for: the interpreter keeps its objects to the end. A failed huge allocation is a NULL (numpy's
# MemoryError), as without ASan, not a report.
ASAN_OPTIONS = "detect_leaks=0:abort_on_error=1:allocator_may_return_null=1:handle_abort=0:symbolize=1"
UBSAN_OPTIONS = "halt_on_error=1:abort_on_error=1:print_stacktrace=1"
ENV_MODULE = "SYNLENS_FUZZ_ACCEL"  # the folder of the sanitized modules a worker loads as analyzer.accel's


def compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise RuntimeError("no C compiler (gcc) found to build analyzer/accel's modules with sanitizers")
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
    """Build (once per version of the sources and flags) the sanitized modules; return their folder."""
    cc = compiler()
    text = b"".join(p.read_bytes() for p in (*SOURCES.values(), *HEADERS))
    folder = out / hashlib.sha256(text + " ".join((cc, *FLAGS)).encode()).hexdigest()[:16]
    include = sysconfig.get_paths()["include"]
    for name, source in SOURCES.items():
        target = folder / f"{name}{sysconfig.get_config_var('EXT_SUFFIX')}"
        if target.exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".tmp")
        subprocess.run([cc, *FLAGS, f"-I{include}", str(source), "-o", str(partial)], check=True, capture_output=True)
        partial.rename(target)
    return folder


def environment(module: Path) -> dict[str, str]:
    """The environment of a worker that runs with the sanitized modules (`module`: their folder)."""
    env = dict(os.environ)
    env["LD_PRELOAD"] = runtime()
    env["ASAN_OPTIONS"] = ASAN_OPTIONS
    env["UBSAN_OPTIONS"] = UBSAN_OPTIONS
    env[ENV_MODULE] = str(module)
    return env


def load_if_asked() -> list[ModuleType] | None:
    """In a worker: the sanitized modules in the folder the environment names, made analyzer.accel's before
    analyzer.accel imports them (None when none is named). Raises when they cannot be the ones analyzer uses."""
    folder = os.environ.get(ENV_MODULE)
    if not folder:
        return None
    modules = []
    for name in SOURCES:
        path = Path(folder) / f"{name}{sysconfig.get_config_var('EXT_SUFFIX')}"
        spec = importlib.util.spec_from_file_location(f"analyzer.accel.{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[f"analyzer.accel.{name}"] = module
        modules.append(module)
    from analyzer import accel as compiled

    if [compiled.COMPILED.reader, compiled.COMPILED.sort] != modules:
        raise RuntimeError(f"analyzer.accel did not take the sanitized modules in {folder} "
                           f"(API {[getattr(m, 'API', None) for m in modules]})")
    return modules
