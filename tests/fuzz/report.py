"""A campaign's figures as Markdown (docs/reliability.md quotes them)."""

from __future__ import annotations

import json
from pathlib import Path


def summary(out: Path) -> str:
    state = json.loads((out / "state.json").read_text(encoding="utf-8"))
    cases = state["cases"]
    hours = state["seconds"] / 3600
    build = "AddressSanitizer + UBSan build" if state["asan"] else "ordinary build"
    head = (f"{cases:,} cases (seed {state['seed']}, {build}), {hours:.1f} h ({state['seconds'] / max(cases, 1):.2f} s "
            f"a case); {cases - state['unreadable']:,} read and analysed, {state['unreadable']:,} refused with a "
            f"one-line error; {len(state['findings'])} distinct findings.")
    lines = [head, "", "| mutator | cases |", "|---|---:|"]
    for name, n in sorted(state["by_mutator"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| `{name}` | {n:,} |")
    if state["findings"]:
        lines += ["", "| finding | kind | cases | first case | reproducer |", "|---|---|---:|---:|---|"]
        for sig, f in state["findings"].items():
            lines.append(f"| {sig} | {f['kind']} | {f['count']:,} | {f['first_case']} | `{f['reproducer']}` |")
    return "\n".join(lines)
