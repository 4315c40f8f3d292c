"""README is the manual: its commands are the ones CI runs, and every CLI option is documented there."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_starts_with_the_two_commands():
    lines = README.splitlines()
    assert lines[0] == "```"
    assert lines[1].startswith("pip install") and "synlens rtt sample_pcaps/" in lines[1]
    assert lines[2].startswith("bash .ci/setup && python3 -m pytest")
    sample = re.search(r"synlens rtt (sample_pcaps/\S+)", lines[1]).group(1)
    assert (ROOT / sample).exists()


def test_ci_runs_the_readme_test_command():
    run = (ROOT / ".ci" / "run").read_text()
    pattern = re.search(r"grep -m1 -E '([^']+)' README.md", run).group(1)
    assert re.search(pattern, README, re.MULTILINE)


def _options(parser):
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                yield from ((f"{name} {o}", o) for a in sub._actions for o in a.option_strings if o.startswith("--"))


@pytest.mark.parametrize("where,option", sorted(set(_options(build_parser()))))
def test_every_cli_option_is_documented(where, option):
    if option == "--help":
        return
    assert option in README, f"{where} is not documented in README.md"


def test_cli_help_runs():
    out = subprocess.run([sys.executable, "-m", "analyzer", "rtt", "--help"], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0 and "--confidence" in out.stdout


def _agent_options():
    from agent.cli import _parser

    for action in _parser()._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                yield from ((f"agent {name} {o}", o) for a in sub._actions for o in a.option_strings
                            if o.startswith("--") and o != "--help")


@pytest.mark.parametrize("where,option", sorted(set(_agent_options())))
def test_every_agent_option_is_documented(where, option):
    agent_readme = (ROOT / "agent" / "README.md").read_text()
    assert option in README and option in agent_readme, f"{where} is not documented"
