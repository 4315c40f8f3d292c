"""README is the tour: its first commands are the ones CI runs. docs/cli.md is the reference: every command's
options, exactly those the parser takes."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CLI_DOC = (ROOT / "docs" / "cli.md").read_text()
EVERY = ("rtt", "scans", "hosts", "report", "export")  # the commands a section whose heading names none documents


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
                yield from ((name, o) for a in sub._actions for o in a.option_strings
                            if o.startswith("--") and o != "--help")


def _documented(text: str) -> set[tuple[str, str]]:
    """(command, option) of every table row of docs/cli.md: the commands its `commands` column names, else the
    `synlens COMMAND` its section's heading names, else every command."""
    out, commands, header = set(), EVERY, None
    for line in text.splitlines():
        if line.startswith("## "):
            named = tuple(re.findall(r"`synlens (\w+)`", line))
            commands, header = named or EVERY, None
        elif line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if header is None:
                header = cells
                continue
            row = dict(zip(header, cells))
            these = tuple(c.strip() for c in row["commands"].split(",")) if "commands" in row else commands
            for option in re.findall(r"`(--[a-z][a-z-]*)", row.get("option", "")):
                out |= {(command, option) for command in these}
    return out


def test_the_cli_reference_documents_exactly_each_commands_options():
    parsed = set(_options(build_parser()))
    documented = _documented(CLI_DOC)
    assert not parsed - documented, f"options not documented in docs/cli.md: {sorted(parsed - documented)}"
    assert not documented - parsed, f"docs/cli.md documents options the commands lack: {sorted(documented - parsed)}"


def test_the_reference_reader_tells_a_missing_and_a_stale_option():
    """(The reader above, on a page that leaves one option out and names one no command has.)"""
    page = CLI_DOC.replace("| `--min-diff US` |", "| `--min-difference US` |")
    documented = _documented(page)
    assert ("rtt", "--min-difference") in documented and ("rtt", "--min-diff") not in documented
    assert ("scans", "--since") in documented and ("hosts", "--chunk") in documented
    assert ("report", "--chunk") not in documented and ("export", "--to") in documented


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
    agent_doc = (ROOT / "docs" / "agent.md").read_text()
    assert f"`{option}" in agent_doc and option in agent_readme, f"{where} is not documented"
