"""Importing the analyzer leaves the garbage collector as it found it (see analyzer/__init__.py)."""

import subprocess
import sys


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_import_keeps_the_collector_state():
    assert _run("import gc; gc.disable(); import analyzer; print(gc.isenabled())") == "False"
    assert _run("import gc; import analyzer; print(gc.isenabled(), gc.get_freeze_count())") == "True 0"


def test_cycles_made_before_and_after_the_import_are_still_collected():
    code = """
import gc, weakref
class Node: pass
def cycle():
    a = Node(); a.me = a
    return weakref.ref(a)
before = cycle()
import analyzer
after = cycle()
gc.collect()
print(before() is None, after() is None)
"""
    assert _run(code) == "True True"
