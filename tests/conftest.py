"""Shared fixtures and the suite's selection.

`python3 -m pytest` runs the fast suite: pyproject's addopts deselect the tests marked `lab` (network
namespaces, tests/lab/), `notebooks` and `slow`. `--all` runs every test whatever its marker, as CI does
(README's test command). A lab test that runs where the lab cannot be built (not root, a tool missing) fails,
saying why: asked for, it must not pass by skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from natlab import NatLab, lab_available, nat_lab
from netns import missing_tools


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--all", action="store_true", dest="run_all",
                     help="run every test, the lab's, the notebooks' and the slow ones included (CI runs this)")


def pytest_configure(config: pytest.Config) -> None:
    if not config.option.run_all:
        return
    if any(arg == "-m" or arg.startswith("-m") and not arg.startswith("--") for arg in config.invocation_params.args):
        raise pytest.UsageError("--all runs every test: it takes no -m")
    config.option.markexpr = ""  # (addopts' -m is the default run's; --all drops it)


# Third-party captures (read-only): ../shared/realworld from the repository root, as CI lays them out;
# SYNLENS_REALWORLD names another place (a work tree kept elsewhere).
REALWORLD = Path(os.environ.get("SYNLENS_REALWORLD", Path(__file__).resolve().parents[1].parent / "shared" / "realworld"))


def realworld(name: str) -> Path:
    """A capture of ../shared/realworld; the calling test skips, saying why, where that folder is absent."""
    if not REALWORLD.is_dir():
        pytest.skip(f"{REALWORLD} is absent: the third-party captures sit beside the repository (shared/realworld)")
    return REALWORLD / name


# Lab names carry the session's PID: concurrent pytest sessions (several engineers on one
# machine) each get their own lab, and labs of killed sessions can be told apart and swept.
LAB_STEM = "slt"


def require_lab() -> None:
    """Fail the calling test or fixture, saying why, when namespaces can't be built here."""
    ok, reason = lab_available()
    if not ok:
        pytest.fail(f"network lab unavailable: {reason}", pytrace=False)


def require_tools(*tools: str) -> None:
    """Fail, saying which, when a command-line tool the test drives is not installed."""
    missing = missing_tools(tools)
    if missing:
        pytest.fail(f"tools not installed: {', '.join(missing)}", pytrace=False)


def lab_prefix(tag: str = "") -> str:
    """A lab name unique to this pytest session (and `tag`, for several labs at once)."""
    return f"{LAB_STEM}{os.getpid()}{tag}"


@pytest.fixture(scope="session")
def lab() -> Iterator[NatLab]:
    """The default IPv4 NAT lab (delay 1 ms each way), shared by the whole session."""
    require_lab()
    NatLab.remove_orphans(LAB_STEM)
    with nat_lab(lab_prefix()) as built:
        yield built


def families_both_ways(packets, probes, monkeypatch):
    """signal_families as it runs (with its batches: analyzer/analysis/signals.py, targets none of whose ports
    answered and one-port targets with few replies) and with the batches turned off (every target through
    the per-target loop); and which batches the first run took."""
    import numpy as np

    from analyzer.analysis import signals

    ran = []
    with monkeypatch.context() as m:
        for name in ("_silent_targets", "_single_port_targets"):
            real = getattr(signals, name)
            m.setattr(signals, name, lambda *a, _real=real, _name=name, **k: (ran.append(_name), _real(*a, **k))[1])
        batched = signals.signal_families(packets, probes)
    with monkeypatch.context() as m:
        m.setattr(signals, "_silent_groups", lambda base: (None, np.zeros(0, np.int64)))
        m.setattr(signals, "_single_port_groups", lambda base, where, quiet: None)
        one_by_one = signals.signal_families(packets, probes)
    return batched, one_by_one, ran
