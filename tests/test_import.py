"""The package imports lazily (analyzer/__init__.py) and the command sets its process up before numpy,
pandas and scipy load (analyzer/__main__.py)."""

import subprocess
import sys
import types


def _run(code: str, env: dict | None = None) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=env).stdout.strip()


def test_importing_the_package_loads_no_library():
    assert _run("import sys, analyzer; print(sorted(m for m in ('numpy', 'pandas', 'scipy') if m in sys.modules))") == "[]"


def test_api_names_are_the_functions_whichever_module_loads_first():
    code = """
import types, analyzer.match, analyzer.scans          # the submodules first: the import binds them to the package
import analyzer
from analyzer import families, hosts, match, scans, rtt, read
from analyzer.match import match as match_function
print(match is match_function, analyzer.match is match_function,
      all(callable(f) and not isinstance(f, types.ModuleType) for f in (families, hosts, match, scans, rtt, read)),
      sorted(set(analyzer.__all__) - set(dir(analyzer))))
"""
    assert _run(code) == "True True True []"


def test_unknown_names_raise_attribute_error():
    assert _run("import analyzer\ntry:\n    analyzer.nothing\nexcept AttributeError as e:\n    print(e)") == (
        "module 'analyzer' has no attribute 'nothing'")


def test_the_command_sets_up_its_process_before_the_libraries_load():
    """One BLAS thread unless the environment says otherwise, the collector frozen out of the imports'
    objects and running again: what cli.run finds (a stand-in here)."""
    code = """
import gc, os, sys, types
fake = types.ModuleType("analyzer.cli")
fake.run = lambda: print(os.environ.get("OPENBLAS_NUM_THREADS"), gc.get_freeze_count() > 0, gc.isenabled())
sys.modules["analyzer.cli"] = fake
from analyzer.__main__ import main
main()
"""
    env = {k: v for k, v in __import__("os").environ.items() if k != "OPENBLAS_NUM_THREADS"}
    assert _run(code, env) == "1 True True"
    assert _run(code, env | {"OPENBLAS_NUM_THREADS": "4"}) == "4 True True"


def test_the_package_module_is_still_a_module():
    import analyzer

    assert isinstance(analyzer, types.ModuleType)
