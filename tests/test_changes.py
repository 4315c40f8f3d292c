"""A series of captures, each analysed on its own and compared (analysis/changes.py, `synlens rtt --each`): the
matching rules on hand-made family tables, the comparison on hand-made snapshots, and the command on the
committed agent capture. The same over a lab series with real changes: tests/lab/test_fleet_lab.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import analyzer
from analyzer.analysis.changes import CHANGES, continuation, family_changes, snapshot
from analyzer.cli import main
from analyzer.errors import CaptureError
from analyzer.render.changes import changes_csv, changes_table

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_pcaps" / "nat_agent.pcap"  # the agent against the NAT lab: gateway ports, forwarded ports
OTHER_TARGET = ROOT / "sample_pcaps" / "scans_syn.pcap"  # a scan of another address (10.77.40.2)
GATEWAY = {22, 23, 25, 80, 139}
INNER = {443, 3306, 8080}


# --------------------------------------------------------------------------- the matching rules


@pytest.mark.parametrize(("before", "after", "found"), [
    pytest.param({0: GATEWAY, 1: INNER}, {0: GATEWAY | {8080}, 1: INNER - {8080}},
                 [("moved", (8080,), 1, 0)], id="a port un-forwarded: moved"),
    pytest.param({0: GATEWAY, 1: INNER}, {0: GATEWAY - {22, 80}, 1: INNER | {22, 80}},
                 [("moved", (22, 80), 0, 1)], id="two ports moved together, their family stayed"),
    pytest.param({0: GATEWAY, 1: INNER}, {0: GATEWAY, 1: {443, 8080}, 2: {3306}},
                 [("split", (3306,), 1, 2)], id="a family split"),
    pytest.param({0: GATEWAY, 1: {443, 8080}, 2: {3306}}, {0: GATEWAY, 1: INNER},
                 [("merged", (3306,), 2, 1)], id="two families merged"),
    pytest.param({0: GATEWAY, 1: {443, 8080}}, {0: GATEWAY | {443, 8080}},
                 [("merged", (443, 8080), 1, 0)], id="a whole family joined another: merged, not moved"),
    pytest.param({0: GATEWAY, 1: INNER}, {0: INNER, 1: GATEWAY}, [], id="renumbered only: no change"),
    pytest.param({0: {1, 2}}, {0: {1}, 1: {2}}, [("split", (2,), 0, 1)], id="a tie: the lower numbers pair"),
    pytest.param({0: {1, 2, 3, 4}, 1: {5, 6}}, {0: {1, 2, 5, 6}, 1: {3, 4}}, [("moved", (1, 2), 0, 0)],
                 id="a tie in overlap: the pairs with fewer ports outside it continue"),
    pytest.param({0: GATEWAY, 1: INNER}, {0: GATEWAY, 1: INNER | {9000}, 2: {9001}}, [],
                 id="families of ports new in the later capture: no family change"),
])
def test_family_changes(before: dict, after: dict, found: list) -> None:
    assert family_changes(before, after)[1] == found


def test_a_later_family_continues_the_earlier_one_holding_most_of_its_ports() -> None:
    # Family 0 keeps 5 of its ports as family 1, family 1 its 2 remaining ones as family 0.
    assert continuation({0: GATEWAY, 1: INNER}, {0: INNER - {8080}, 1: GATEWAY | {8080}}) == {0: 1, 1: 0}
    # Two earlier families share the most ports with one later family: the bigger overlap continues it.
    assert continuation({0: {1, 2, 3}, 1: {4, 5}}, {0: {1, 2, 3, 4, 5}}) == {0: 0}


partitions = st.lists(st.integers(0, 4), min_size=1, max_size=12)


@given(partitions, partitions)
def test_every_port_that_changed_family_is_one_change_of_the_kind_its_families_pairing_says(a: list, b: list
                                                                                          ) -> None:
    n = min(len(a), len(b))
    before = {f: {p for p in range(n) if a[p] == f} for f in set(a[:n])}
    after = {f: {p for p in range(n) if b[p] == f} for f in set(b[:n])}
    continues, found = family_changes(before, after)
    changed = {p for p in range(n) if continues.get(a[p]) != b[p]}
    listed = [p for _, ports, _, _ in found for p in ports]
    assert sorted(listed) == sorted(changed)  # every changed port once, and no other
    paired_after = set(continues.values())
    for kind, ports, i, j in found:
        assert all(a[p] == i and b[p] == j for p in ports)
        assert kind == ("merged" if i not in continues else "split" if j not in paired_after else "moved")
        assert i in continues or j in paired_after  # two unpaired families never share a port
    same = sorted(map(sorted, before.values())) == sorted(map(sorted, after.values()))
    assert (not found) == same


# --------------------------------------------------------------------------- hand-made snapshots


def _ports(rows: list[tuple]) -> pd.DataFrame:
    """A ports table as the families step makes it: (target, port, family, kind, received, ttl, median_us)."""
    frame = pd.DataFrame(rows, columns=["target", "port", "family", "family_kind", "received", "ttl", "median_us"])
    return frame.assign(protocol="tcp", ttl=frame["ttl"].astype("Int64"), ttl_agree=frame["received"])


T = "10.0.0.1"
HAND_MADE = [
    [(T, 22, 0, "answered", 10, 64, 20.0), (T, 80, 0, "answered", 10, 64, 21.0),
     (T, 443, 1, "answered", 10, 63, 2000.0), (T, 135, 2, "no answer", 0, None, None)],
    # 443 silent; 135 answers; 8443 newly probed; 22's TTL changed
    [(T, 22, 0, "answered", 10, 128, 20.0), (T, 80, 0, "answered", 10, 64, 22.0),
     (T, 135, 0, "answered", 10, 64, 19.0), (T, 8443, 1, "answered", 10, 63, 2010.0),
     (T, 443, 2, "no answer", 0, None, None)],
    [("10.0.0.2", 22, 0, "answered", 10, 64, 20.0)],  # the target not probed
    # answered, nothing placed: RTT could not test it
    [(T, 22, -1, "untestable", 2, None, 20.0), (T, 80, -1, "untestable", 2, None, 20.0),
     (T, 135, -1, "untestable", 2, None, 20.0), (T, 8443, -1, "untestable", 2, None, 20.0),
     (T, 443, 0, "no answer", 0, None, None)],
]


@pytest.fixture
def series() -> analyzer.CaptureSeries:
    return analyzer.changes(snapshot(f"hour{n}.pcap", _ports(rows)) for n, rows in enumerate(HAND_MADE, 1))


def test_states_say_where_the_target_is_missing_or_untestable(series: analyzer.CaptureSeries) -> None:
    mine = series.states[series.states["target"] == T]
    assert mine["state"].tolist() == ["tested", "tested", "absent", "untestable"]
    pairs = series.pairs[series.pairs["target"] == T]
    assert list(zip(pairs["before"], pairs["after"])) == [(1, 2), (2, 4)]  # the capture without it skipped


def test_ports_that_appeared_went_silent_were_added_or_changed_signal(series: analyzer.CaptureSeries) -> None:
    first = series.changes[(series.changes["target"] == T) & (series.changes["before"] == 1)]
    assert [(r.change, r.ports, r.signal, r.was, r.now) for r in first.itertuples()] == [
        ("appeared", (135,), None, None, None), ("went_silent", (443,), None, None, None),
        ("newly_probed", (8443,), None, None, None), ("signal", (22,), "ttl", 64, 128)]
    assert bool(series.pairs["changed"].iat[0])


def test_ports_placed_in_one_capture_only_cannot_be_told(series: analyzer.CaptureSeries) -> None:
    last = series.changes[(series.changes["target"] == T) & (series.changes["after"] == 4)]
    # 22, 80, 135, 8443 answered in both; families in capture 2 only. 443 answered in neither.
    assert [(r.change, r.ports, r.capture) for r in last.itertuples()] == [("untestable", (22, 80, 135, 8443), 4)]
    assert not series.pairs["changed"].iat[1]  # nothing seen to change; what cannot be told is said


def test_ports_probed_in_one_capture_only_are_said_so_not_silent_or_appeared() -> None:
    hour1 = [(T, 22, 0, "answered", 10, 64, 20.0), (T, 25, 0, "answered", 10, 64, 21.0)]
    hour2 = [(T, 22, 0, "answered", 10, 64, 20.0), (T, 443, 0, "answered", 10, 64, 21.0)]
    series = analyzer.changes(snapshot(f"hour{n}.pcap", _ports(rows)) for n, rows in enumerate((hour1, hour2), 1))
    assert [(r.change, r.ports) for r in series.changes.itertuples()] == [
        ("newly_probed", (443,)), ("no_longer_probed", (25,))]


def test_the_text_names_the_missing_capture_and_what_cannot_be_told(series: analyzer.CaptureSeries) -> None:
    text = changes_table(series, {"method": "robust", "confidence": 0.99, "signals": "rtt"})
    assert "3        -       (not probed in this capture)" in text
    assert "  2 -> 4  (capture 3: not probed)" in text
    assert "cannot tell whether 22, 80, 135, 8443 moved: no family in capture 4 (untestable)" in text
    assert "ttl: 64 -> 128 on 22" in text and "went silent: 443" in text
    csv = changes_csv(series).splitlines()
    assert csv[0].startswith("target,protocol,before,after,before_capture,after_capture,change,ports")
    assert "10.0.0.1,tcp,1,2,hour1.pcap,hour2.pcap,signal,22,,,ttl,64,128," in csv


def test_family_changes_are_worded_with_the_families_members() -> None:
    fams = [(T, p, 0, "answered", 10, 64, 20.0) for p in (22, 80)] + [
        (T, p, 1, "answered", 10, 63, 2000.0) for p in (443, 3306, 8080)]
    moved = [(T, p, 0 if p == 8080 else f, k, r, t, m) for (_, p, f, k, r, t, m) in fams]
    split = [(T, p, 2 if p == 3306 else f, k, r, t, m) for (_, p, f, k, r, t, m) in moved]
    series = analyzer.changes(snapshot(f"{n}", _ports(rows)) for n, rows in enumerate((fams, moved, split)))
    text = changes_table(series, {"method": "robust", "confidence": 0.99, "signals": "rtt"})
    assert "1 -> 2  moved: 8080 from family 1 (with 443, 3306) to family 0 (with 22, 80)" in text
    assert "2 -> 3  split: 3306 from family 1 (with 443) into a new family 2" in text
    assert set(series.changes["change"]) <= set(CHANGES)


# --------------------------------------------------------------------------- the command, on the agent capture


@pytest.fixture
def two_hours(tmp_path: Path) -> list[Path]:
    """The agent capture twice, as two hours of one sensor (copies: a file named twice is read once)."""
    paths = [tmp_path / f"hour{n}.pcap" for n in (1, 2)]
    for path in paths:
        shutil.copy(SAMPLE, path)
    return paths


def _rtt(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    code = main(["rtt", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_same_capture_twice_shows_no_change(two_hours: list[Path], capsys: pytest.CaptureFixture) -> None:
    code, out, err = _rtt(capsys, "--each", *two_hours)
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == "no change across captures 1-2"
    assert "1-2      0       22–23, 25, 80, 139" in out  # the two hours, alike, in one block
    code, out, _ = _rtt(capsys, "--each", *two_hours, "--format", "csv")
    assert out.splitlines()[1].split(",")[:7] == ["10.77.1.1", "tcp", "1", "2", str(two_hours[0]),
                                                  str(two_hours[1]), "none"]


def test_each_capture_is_its_own_analysis(two_hours: list[Path], capsys: pytest.CaptureFixture) -> None:
    """Each hour has the families and counts `synlens rtt` gives for that capture alone (two copies read as one
    capture would be one hour's packets counted once, as duplicates)."""
    _, out, _ = _rtt(capsys, SAMPLE, "--format", "json")
    alone = json.loads(out)
    _, out, _ = _rtt(capsys, "--each", *two_hours, "--format", "json")
    each = json.loads(out)
    assert [c["packets"] for c in each["captures"]] == [alone["packets"]] * 2
    assert [c["probes_matched"] for c in each["captures"]] == [alone["probes_matched"]] * 2
    (target,) = each["targets"]
    expected = [{k: f[k] for k in ("family", "kind", "ports", "median_us", "signals", "evidence")}
                for f in alone["targets"][0]["families"]]
    assert [c["families"] for c in target["captures"]] == [expected] * 2
    assert target["comparisons"] == [{"before": 1, "after": 2, "changed": False, "continued": [[0, 0], [1, 1]],
                                      "changes": []}]
    assert (each["method"], each["confidence"], each["signals"]) == ("robust", 0.99, "all")


def test_the_api_gives_what_the_command_does(two_hours: list[Path]) -> None:
    series = analyzer.changes(analyzer.analyze_each([str(p) for p in two_hours]))
    assert [s.name for s in series.snapshots] == [str(p) for p in two_hours]
    assert series.snapshots[0].start_ns == 1795326378346715715  # the capture's first packet
    assert series.changes.empty and series.states["state"].tolist() == ["tested", "tested"]
    assert series.families["ports"].tolist()[:3] == [(22, 23, 25, 80, 139), (443, 3306, 8080), (135,)]


def test_rtt_alone(two_hours: list[Path], capsys: pytest.CaptureFixture) -> None:
    code, out, _ = _rtt(capsys, "--each", *two_hours, "--signals", "rtt")
    assert code == 0
    assert "CAPTURE  FAMILY  PORTS               MEDIAN (us)\n1-2      0       22–23, 25, 80, 139  18.85" in out


# --------------------------------------------------------------------------- bad input, missing targets


def test_an_input_that_is_no_capture_is_one_line_and_the_rest_is_compared(
        two_hours: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    junk = tmp_path / "hour3.pcap"
    junk.write_bytes(b"not a capture at all\n")
    code, out, err = _rtt(capsys, "--each", tmp_path)
    assert code == 1
    assert err == f"synlens: error: {junk}: not a pcap or pcapng file (starts with bytes 6e6f7420)\n"
    assert out.splitlines()[-1] == "no change across captures 1-2"
    code, out, err = _rtt(capsys, "--each", junk)  # nothing left: the error is the command's
    assert (code, out) == (2, "") and err.count("\n") == 1 and str(junk) in err


def test_a_capture_that_cannot_be_read_goes_to_the_caller(tmp_path: Path) -> None:
    junk = tmp_path / "x.pcap"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CaptureError, match="x.pcap"):
        list(analyzer.analyze_each(str(junk)))
    errors = []
    assert [f.name for f, _ in analyzer.analyze_each([str(junk), str(SAMPLE)], on_error=errors.append)] == [
        str(SAMPLE)]
    assert [e.path for e in errors] == [str(junk)]


def test_a_capture_without_the_target_is_said(two_hours: list[Path], capsys: pytest.CaptureFixture) -> None:
    other = two_hours[0].parent / "hour1b.pcap"  # another sensor's scan, between the two hours
    shutil.copy(OTHER_TARGET, other)
    code, out, err = _rtt(capsys, "--each", two_hours[0], other, two_hours[1], "--target", "10.77.1.1",
                          "--format", "json")
    assert code == 0
    # (scans_syn.pcap was captured before the agent's capture: it is the first in capture order)
    assert err == f"synlens: note: --target 10.77.1.1: no probe to that address in {other}\n"
    (target,) = json.loads(out)["targets"]
    assert [c["state"] for c in target["captures"]] == ["absent", "tested", "tested"]
    assert [(c["before"], c["after"]) for c in target["comparisons"]] == [(2, 3)]
    code, out, _ = _rtt(capsys, "--each", two_hours[0], other, two_hours[1])
    assert "1        -       (not probed in this capture)" in out
    assert out.count("one capture holds it: nothing to compare") == 1  # 10.77.40.2, in one capture only
