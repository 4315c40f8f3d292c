"""The pages in docs/ say what the code does: the pipeline's drawing is the one its declaration draws, the
reading page's column table is the schema's, the API page's examples run, and every file a page names exists."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from analyzer.reading.schema import PACKET_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md")) + [ROOT / "benchmarks" / "README.md", ROOT / "agent" / "README.md",
                                     ROOT / "CHANGELOG.md"]


def _make_diagram():
    spec = importlib.util.spec_from_file_location("make_diagram", DOCS / "make_diagram.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_pipeline_drawing_is_drawn_from_pipeline_steps():
    """docs/pipeline.svg is what docs/make_diagram.py draws from analyzer/pipeline.py's STEPS today (after a change
    to the steps: python3 docs/make_diagram.py)."""
    assert (DOCS / "pipeline.svg").read_text() == _make_diagram().draw()


def test_the_drawing_follows_the_steps(monkeypatch):
    """A step added to STEPS changes the drawing (so the test above cannot pass on a stale one)."""
    from analyzer import pipeline

    before = _make_diagram().draw()
    extra = pipeline.Step("families", ("probes", "scans"), (), ("ts_ns",), lambda run: None)
    steps = {**pipeline.STEPS, "families": extra}
    monkeypatch.setattr(pipeline, "STEPS", steps)
    after = _make_diagram().draw()
    assert after.count("scans result") == before.count("scans result") + 1


def test_reading_page_lists_the_schemas_columns():
    """The packets table on docs/reading.md is reading/schema.py's: every column, in order, with its dtype and
    meaning."""
    rows = re.findall(r"^\| `(\w+)` \| (\S+) \| (.+) \|$", (DOCS / "reading.md").read_text(), re.MULTILINE)
    assert rows == [(c.name, c.dtype, c.meaning) for c in PACKET_COLUMNS]


def test_api_page_examples_run(monkeypatch, capsys):
    """Every Python block of docs/api.md, in order, in one namespace, from the repository's root."""
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "api.md").read_text(), re.DOTALL)
    assert len(blocks) >= 8
    monkeypatch.chdir(ROOT)
    namespace: dict[str, object] = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/api.md block {i + 1}", "exec"), namespace)  # noqa: S102 (the page's own code)


def test_docs_index_lists_every_page():
    index = (DOCS / "README.md").read_text()
    linked = set(re.findall(r"\]\(([\w.-]+\.md)\)", index))
    pages = {p.name for p in DOCS.glob("*.md")} - {"README.md"}
    assert linked == pages


# A path in a page: a link's target, or a repository path in backticks (analyzer/…, tests/…, benchmarks/…), but
# for the files the benchmarks make (benchmarks/data/, not committed).
_LINK = re.compile(r"\]\((?!https?:|#)([^)#\s]+)")
_PATH = re.compile(r"`((?:analyzer|agent|tests|benchmarks|docs|notebooks|sample_pcaps)/[\w./-]*\w)`")
_IN_ANALYZER = re.compile(r"`((?:reading|analysis|render|accel)/[\w./-]*\w)`")  # (the analyzer's subpackages)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_files_a_page_names_exist(page: Path):
    """Links and the repository paths in backticks name files that exist: a module moved or renamed without its
    page fails here."""
    text = page.read_text()
    missing = [target for target in _LINK.findall(text) if not (page.parent / target).exists()]
    missing += [path for path in _PATH.findall(text)
                if not path.startswith("benchmarks/data/") and not (ROOT / path).exists()]
    missing += [path for path in _IN_ANALYZER.findall(text) if not (ROOT / "analyzer" / path).exists()]
    assert not missing, f"{page.relative_to(ROOT)} names files that do not exist: {missing}"
