"""`synlens rtt --each` over a fleet's series of real agent captures (the NAT lab, tests/support/natlab.py), with forwards
changed between runs: the output names exactly the change made, and nothing where nothing changed.

The series (one capture an hour, as a fleet's sensor makes them; here a minute apart):

1. the lab as built: 22, 80 answered by the gateway (with the closed 23, 25 and the rejected 139); 443, 3306,
   8080 DNATed to the inner host behind the delay line;
2. the same (nothing changed);
3. 8080 no longer forwarded: the gateway answers it itself;
4. 80 newly forwarded to the inner host.

Needs root and the lab's tools; skips with the reason shown otherwise.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import lab_prefix, require_lab
from natlab import nat_lab

from analyzer.cli import main

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]

TRIPS = 8  # above the evidence rule's 5 trips: RTT tests every port of every capture
GATEWAY, INNER = 0, 1  # the families' numbers: by speed, the gateway's own ports first
# What was changed before each capture (none before the second: the control).
SERIES = ({}, {}, {8080: None}, {80: "inner"})


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The folder of the series' captures (with the agent's sidecars beside them), made in a lab torn down after."""
    require_lab()
    folder = tmp_path_factory.mktemp("fleet")
    with nat_lab(lab_prefix("flt")) as lab:
        # every kind of port the lab has: open (gateway's and forwarded), closed, dropped, rejected
        ports = sorted((*lab.open_ports, *lab.closed_ports, lab.dropped_port, lab.rejected_port))
        for hour, change in enumerate(SERIES, 1):
            if change:
                lab = lab.reforward({p: lab.inner_addrs[0] if to else None for p, to in change.items()})
            pcap = folder / f"sensor-hour{hour}.pcap"
            lab.run(lab.scanner_ns, "env", f"PYTHONPATH={ROOT}", sys.executable, "-m", "agent", "probe", lab.target,
                    "--ports", ",".join(map(str, ports)), "--numtrips", str(TRIPS), "--delay", "20ms",
                    "--timeout", "1s", "--write", str(pcap), timeout=300)  # (a failure raises, with its stderr)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(["rtt", "--each", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_each_capture_has_the_families_the_lab_was_wired_for(captures: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = _run(capsys, str(captures), "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert [c["name"] for c in doc["captures"]] == [str(captures / f"sensor-hour{h}.pcap") for h in (1, 2, 3, 4)]
    (target,) = doc["targets"]
    gateway = {22, 23, 25, 80, 139}
    wired = [(gateway, {443, 3306, 8080})] * 2 + [(gateway | {8080}, {443, 3306}),
                                                   (gateway - {80} | {8080}, {80, 443, 3306})]
    for capture, (own, forwarded) in zip(target["captures"], wired):
        assert capture["state"] == "tested"
        answered = {f["family"]: set(f["ports"]) for f in capture["families"] if f["kind"] == "answered"}
        assert answered == {GATEWAY: own, INNER: forwarded}, capture["capture"]
        (silent,) = [f["ports"] for f in capture["families"] if f["kind"] == "no answer"]
        assert silent == [135]  # the dropped port


def test_the_output_names_exactly_the_forwards_changed(captures: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = _run(capsys, str(captures), "--format", "json")
    assert code == 0, err
    (target,) = json.loads(out)["targets"]
    found = {(c["before"], c["after"]): c for c in target["comparisons"]}
    assert sorted(found) == [(1, 2), (2, 3), (3, 4)]
    assert found[1, 2]["changes"] == [] and not found[1, 2]["changed"]
    assert found[2, 3]["changes"] == [
        {"change": "moved", "ports": [8080], "before_family": INNER, "after_family": GATEWAY},
        {"change": "signal", "ports": [8080], "signal": "ttl", "was": 63, "now": 64}]
    assert found[3, 4]["changes"] == [
        {"change": "moved", "ports": [80], "before_family": GATEWAY, "after_family": INNER},
        {"change": "signal", "ports": [80], "signal": "ttl", "was": 64, "now": 63}]
    assert all(c["continued"] == [[GATEWAY, GATEWAY], [INNER, INNER]] for c in found.values())


def test_the_text_folds_the_unchanged_hours_and_words_the_moves(captures: Path, capsys: pytest.CaptureFixture
                                                                ) -> None:
    code, out, err = _run(capsys, str(captures))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("# 4 captures, each analysed on its own")
    blocks = [line.split()[0] for line in lines[lines.index("10.77.1.1 (tcp)") + 2:] if line[:1].isdigit()]
    assert blocks == ["1-2", "3", "4"]  # hours 1 and 2 alike: one block
    changes = lines[lines.index("changes:") + 1:]
    assert changes == [
        "  2 -> 3  moved: 8080 from family 1 (with 443, 3306) to family 0 (with 22–23, 25, 80, 139)",
        "          ttl: 63 -> 64 on 8080",
        "  3 -> 4  moved: 80 from family 0 (with 22–23, 25, 139, 8080) to family 1 (with 443, 3306)",
        "          ttl: 64 -> 63 on 80"]
