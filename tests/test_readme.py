"""README's example runs are what the commands print today.

The convention (README says it too): a fenced block whose first line starts with `$ ` shows commands and their
output. Each `$ ` line is a command, run by bash from the repository's root (a view of it, so that
a file a command writes lands outside the checkout) with `synlens` meaning this checkout's `python3 -m analyzer`; the lines after it, up to the next `$ ` line or the block's end, are what it
prints, stdout and stderr together. A line `…` alone (indented or not) stands for one or more lines left out.
Lines compare exactly but for trailing blanks, which a page does not show. README's Python blocks run too.
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
ELISION = "…"
PROMPT = "$ "


@dataclass(frozen=True)
class Example:
    """One command of README and the output it shows."""

    line: int  # README's line of the command, 1-based
    command: str
    expected: tuple[str, ...]


def examples(text: str) -> list[Example]:
    """Every command of the page's example blocks (see the module), in order."""
    found: list[Example] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("```"):
            i += 1
            continue
        end = next((k for k in range(i + 1, len(lines)) if lines[k].startswith("```")), len(lines))
        body = lines[i + 1:end]
        if body and body[0].startswith(PROMPT):
            starts = [k for k, line in enumerate(body) if line.startswith(PROMPT)] + [len(body)]
            for a, b in itertools.pairwise(starts):
                found.append(Example(i + 2 + a, body[a][len(PROMPT):], tuple(body[a + 1:b])))
        i = end + 1
    return found


def matches(expected: tuple[str, ...] | list[str], actual: list[str]) -> bool:
    """Whether `actual` is `expected` line for line, each elision line standing for one or more lines."""
    want = tuple(line.rstrip() for line in expected)
    got = tuple(line.rstrip() for line in actual)

    @cache
    def from_(i: int, j: int) -> bool:  # want[i:] against got[j:]
        if i == len(want):
            return j == len(got)
        if want[i].strip() == ELISION:
            return any(from_(i + 1, k) for k in range(j + 1, len(got) + 1))
        return j < len(got) and want[i] == got[j] and from_(i + 1, j + 1)

    return from_(0, 0)


@pytest.fixture(scope="module")
def checkout_view(tmp_path_factory) -> Path:
    """A directory that shows the repository's root through symbolic links: the commands find the captures and
    the analyzer as from the root, and a file one writes (the report) lands here, not in the checkout."""
    view = tmp_path_factory.mktemp("readme")
    for entry in ROOT.iterdir():
        if entry.name != ".git":
            (view / entry.name).symlink_to(entry)
    return view


def run(command: str, cwd: Path) -> tuple[int, list[str]]:
    """The exit status of bash running `command` (pipelines fail when a stage fails) and what it printed."""
    script = f"synlens() {{ {shlex.quote(sys.executable)} -m analyzer \"$@\"; }}\nset -o pipefail\n{command}\n"
    # (SYNLENS_PROGRESS=1 would add progress lines to stderr: the runs show what a user sees by default)
    env = {**{k: v for k, v in os.environ.items() if k != "SYNLENS_PROGRESS"}, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=600, check=False)
    return out.returncode, out.stdout.decode("utf-8", errors="replace").splitlines()


EXAMPLES = examples(README.read_text())


def test_readme_shows_each_command_run():
    """The convention finds the tour's runs: each command, a series, several inputs' filters, the second engine, an
    error and a damaged capture (so that a block broken out of the convention cannot go unchecked quietly)."""
    commands = [e.command for e in EXAMPLES]
    for wanted in (r"^synlens rtt \S+$", r"^synlens rtt --each ", r"^synlens scans ", r"^synlens hosts ",
                   r"^synlens report ", r"--since .* --until ", r"--engine tshark", r"; echo \"exit status \$\?\"$",
                   r"edge/truncated\.pcap"):
        assert any(re.search(wanted, c) for c in commands), f"no README run matches {wanted!r}: {commands}"
    assert all(e.expected for e in EXAMPLES), "a README run shows no output"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: f"README.md:{e.line}")
def test_readme_output_is_what_the_command_prints(example: Example, checkout_view: Path):
    status, printed = run(example.command, checkout_view)
    assert status == 0, f"README.md:{example.line}: `{example.command}` exited {status}:\n" + "\n".join(printed)
    diff = "\n".join(difflib.unified_diff(list(example.expected), printed, "README.md", "printed", lineterm=""))
    assert matches(example.expected, printed), f"README.md:{example.line}: `{example.command}`\n{diff}"


def test_a_changed_figure_fails(checkout_view: Path):
    """The comparison can fail: the first run's output, with one figure changed in a line README shows, does not
    match what the command prints."""
    example = EXAMPLES[0]
    _, printed = run(example.command, checkout_view)
    where = next(k for k, line in enumerate(example.expected) if line.strip() != ELISION and re.search(r"\d", line))
    line = example.expected[where]
    digit = re.search(r"\d", line)
    changed = line[:digit.start()] + str((int(digit.group()) + 1) % 10) + line[digit.end():]
    edited = example.expected[:where] + (changed,) + example.expected[where + 1:]
    assert matches(example.expected, printed)
    assert not matches(edited, printed)


def test_readme_python_runs(monkeypatch):
    """README's Python blocks, in order, in one namespace, from the repository's root."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert blocks
    monkeypatch.chdir(ROOT)
    namespace: dict[str, object] = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)  # noqa: S102 (the page's own code)


@pytest.mark.parametrize("expected,actual,result", [
    (["a", "…", "d"], ["a", "b", "c", "d"], True),
    (["a", "  …", "d"], ["a", "b", "d"], True),  # (indented, as inside JSON)
    (["a", "…", "d"], ["a", "d"], False),  # an elision stands for at least one line
    (["a", "…"], ["a", "b", "c"], True),
    (["a", "…", "c", "…"], ["a", "b", "c", "x", "c", "y"], True),
    (["a", "…", "d"], ["a", "b", "c", "e"], False),
    (["a", "b"], ["a", "b", "c"], False),  # no line printed goes unshown without an elision
    (["a  "], ["a"], True),  # trailing blanks
    (["a", "b"], ["a", "B"], False),
])
def test_matches(expected, actual, result):
    assert matches(expected, actual) is result
