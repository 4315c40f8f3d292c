"""The one pipeline (analyzer/pipeline.py): what it returns is what the API's functions return called one by one;
the columns each step declares are the columns it reads; every entry point runs it; its notes and the reader's
warnings reach the result."""

from __future__ import annotations

import gc
import warnings
import weakref
from pathlib import Path

import pandas as pd
import pytest
from conftest import REALWORLD as REAL

import analyzer
from analyzer import cli, pipeline
from analyzer.render import report

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_pcaps"
CAPTURES = [SAMPLES / "nat_qscan.pcap", SAMPLES / "scans_multi.pcap", SAMPLES / "nat_nmap_ipv6.pcap",
            REAL / "hw13-01__nmap.pcapng"]


def one_by_one(capture: Path) -> dict[str, object]:
    """The API's functions called one by one on the whole tables, as a user of the API would."""
    packets = analyzer.read(str(capture))
    probes = analyzer.match(packets)
    result = analyzer.scans(packets, probes)
    return {"families": analyzer.families(probes), "signals": analyzer.signal_families(packets, probes),
            "scans": result, "hosts": analyzer.hosts(packets, probes, result.states, result.scans)}


def assert_same(got: object, want: object) -> None:
    if isinstance(want, pd.DataFrame):
        pd.testing.assert_frame_equal(got, want)
    elif isinstance(want, analyzer.analysis.scans.ScanResult):
        for name in ("scans", "states", "notes"):
            pd.testing.assert_frame_equal(getattr(got, name), getattr(want, name))
    else:
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert_same(a, b)


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_the_pipeline_gives_what_the_functions_give(capture: Path) -> None:
    """Reading only the columns the steps declare, matching only the probe columns they declare, and letting
    tables go as it goes, the pipeline's results are the functions' on the whole tables: the declarations
    name every column a step reads (a missing one would raise or change a result)."""
    want = one_by_one(capture)
    got = pipeline.analyze(str(capture), list(pipeline.STEPS))
    for name in pipeline.STEPS:
        assert_same(getattr(got, name), want[name])
    assert len(want["scans"].scans) or len(want["families"])  # (something to compare)


def test_tables_are_kept_only_when_asked() -> None:
    capture = str(SAMPLES / "nat_qscan.pcap")
    lean = pipeline.analyze(capture, ["scans"])
    assert lean.packets is None and lean.probes is None and lean.hosts is None and lean.families is None
    kept = pipeline.analyze(capture, ["scans"], keep=["packets", "probes"])
    pd.testing.assert_frame_equal(kept.packets, analyzer.read(capture))
    pd.testing.assert_frame_equal(kept.probes, analyzer.match(analyzer.read(capture)))
    assert (lean.packet_count, lean.probes_matched) == (len(kept.packets), int(kept.probes["reply_frame"].notna().sum()))


def test_no_step_reads_and_matches_the_capture() -> None:
    """With no step asked for, the capture is read and matched and the counts every output reports are there."""
    capture = str(SAMPLES / "nat_qscan.pcap")
    bare = pipeline.analyze(capture, [])
    kept = pipeline.analyze(capture, ["scans"], keep=["probes"])
    assert bare.scans is None and bare.hosts is None and bare.probes_matched > 0
    assert (bare.packet_count, bare.probes_matched) == (kept.packet_count, int(kept.probes["reply_frame"].notna().sum()))


def test_columns_are_those_the_steps_declare() -> None:
    columns, probe_columns = pipeline.columns_for(["families"])
    assert probe_columns == set(analyzer.analysis.stats.PROBE_FIELDS)
    assert set(columns) == set(analyzer.match_columns(probe_columns))
    scan_columns, _ = pipeline.columns_for(["scans", "hosts"])
    assert set(analyzer.analysis.scans.PACKET_FIELDS) | set(analyzer.analysis.hosts.PACKET_FIELDS) <= set(scan_columns)
    assert pipeline.columns_for(["scans"], keep=["packets"])[0] is None


def test_packets_are_let_go_once_no_step_needs_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """RTT families alone read no packet column after matching: the packets table is gone before they run."""
    alive = []
    real_read = pipeline.read_sources

    def watched_read(*args: object, **kwargs: object) -> pd.DataFrame:
        packets = real_read(*args, **kwargs)
        alive.append(weakref.ref(packets))
        return packets

    def families_step(run: pipeline._Run) -> pd.DataFrame:
        gc.collect()
        alive.append(alive[0]() is None)
        return real_step(run)

    real_step = pipeline.STEPS["families"].run
    monkeypatch.setattr(pipeline, "read_sources", watched_read)
    monkeypatch.setitem(pipeline.STEPS, "families", pipeline.Step("families", ("probes",), (), analyzer.analysis.stats.PROBE_FIELDS,
                                                                  families_step))
    pipeline.analyze(str(SAMPLES / "nat_qscan.pcap"), ["families"])
    assert alive[1] is True


def test_unknown_steps_are_refused() -> None:
    with pytest.raises(ValueError, match="not steps of the pipeline: \\['nmap'\\]"):
        pipeline.analyze(str(SAMPLES / "nat_qscan.pcap"), ["scans", "nmap"])


def test_notes_and_warnings_reach_the_result() -> None:
    capture = str(REPO / "tests" / "data" / "edge" / "truncated.pcap")
    with pytest.warns(analyzer.CaptureWarning, match="cut short"):
        a = pipeline.analyze(capture, ["families"], pipeline.Options(targets=("192.0.2.77",)))
    assert len(a.warnings) == 1 and "cut short" in a.warnings[0]
    assert a.notes[0] == f"--target 192.0.2.77: no probe to that address in {capture}"


@pytest.mark.parametrize("argv", [["rtt"], ["rtt", "--signals", "rtt"], ["scans"], ["hosts"], ["report", "-o", "{tmp}"]])
def test_every_command_runs_the_pipeline(argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    calls = []
    real = pipeline.analyze

    def recorded(capture: str, steps: object = (), *args: object, **kwargs: object) -> pipeline.Analysis:
        calls.append(list(steps))
        return real(capture, steps, *args, **kwargs)

    monkeypatch.setattr(cli, "analyze", recorded)
    monkeypatch.setattr(report, "analyze", recorded)
    argv = [a.replace("{tmp}", str(tmp_path / "r.html")) for a in argv]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main([argv[0], str(SAMPLES / "nat_qscan.pcap"), *argv[1:]]) == 0
    assert len(calls) == 1
    expected = {"rtt": ["signals"] if "--signals" not in argv else ["families"], "scans": ["scans", "hosts"],
                "hosts": ["scans", "hosts"], "report": list(report.REPORT_STEPS)}[argv[0]]
    assert calls[0] == expected
