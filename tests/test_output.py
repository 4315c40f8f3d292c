"""Output helpers checked against the system they stand in for."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import analyzer
from analyzer.cli import main
from analyzer.output import rtt_json, rtt_table, rtt_table_blocks, scans_table, service_name


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_service_names_are_getservbyport(protocol: str) -> None:
    """service_name reads /etc/services once; it must name every port as getservbyport(3) does."""
    ports = list(range(1200)) + list(range(1200, 65536, 7)) + [65535]
    for port in ports:
        try:
            want = socket.getservbyport(port, protocol)
        except OSError:
            want = "unknown"
        assert service_name(port, protocol) == want, (port, protocol)
    assert service_name(22, "tcp") == "ssh"  # the test would pass vacuously with no /etc/services


@pytest.mark.parametrize("capture", ["nat_qscan.pcap", "nat_agent.pcap", "nat_nmap_ipv6.pcap", "scans_multi.pcap"])
def test_big_rtt_json_says_what_the_small_one_says(capture: str, monkeypatch) -> None:
    """Big results are encoded by pandas' C encoder as one JSON fragment per target of many ports, small ones
    (and a big result's small targets) as dicts: same JSON."""
    from analyzer import output

    packets = analyzer.read(Path(__file__).resolve().parents[1] / "sample_pcaps" / capture)
    fams, family_table = analyzer.signal_families(packets, analyzer.match(packets))
    small = output.rtt_json(fams, {"capture": capture}, family_table)
    monkeypatch.setattr(output, "INDENT_UP_TO_ROWS", -1)
    compact = output.rtt_json(fams, {"capture": capture}, family_table)  # (these targets: too few ports to defer)
    monkeypatch.setattr(output, "DEFER_ROWS", 1)
    big = output.rtt_json(fams, {"capture": capture}, family_table)
    assert b"\n" in small and b"\n" not in big and big != compact  # the three paths really ran
    assert json.loads(big) == json.loads(small) == json.loads(compact)
    monkeypatch.setattr(output, "BLOCK_ROWS", 3)  # the records written three rows at a time: same text
    assert len(fams) > 3 and output.rtt_json(fams, {"capture": capture}, family_table) == big


@pytest.mark.parametrize("capture", ["nat_qscan.pcap", "scans_multi.pcap", "nat_hping3.pcap"])
def test_table_written_in_blocks_is_the_same_table(capture: str, monkeypatch) -> None:
    """The rtt table made three rows at a time, with widths from the columns' extremes, is the table made
    whole: every line, and every column as wide as its widest cell (checked against all cells' texts)."""
    from pathlib import Path

    import analyzer
    from analyzer import output

    packets = analyzer.read(Path(__file__).resolve().parents[1] / "sample_pcaps" / capture)
    fams, family_table = analyzer.signal_families(packets, analyzer.match(packets))
    meta = {"capture": capture, "method": "robust", "confidence": 0.99, "probes_matched": 1, "unsolicited_replies": 0}
    whole = output.rtt_table(fams, meta, family_table)
    assert fams.groupby(["target", "protocol"]).size().max() > 3  # some target's rows span several blocks
    monkeypatch.setattr(output, "BLOCK_ROWS", 3)
    assert output.rtt_table(fams, meta, family_table) == whole
    for _, rows in fams.groupby(["target", "protocol"], sort=False):
        _, columns, _, _ = output._rtt_columns(rows, True)
        for text, width in columns:
            assert width == max(map(len, text(slice(None))))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(-1e7, 1e7, allow_nan=False)), min_size=1, max_size=40),
       st.sampled_from(["{}", "{:.2f}", "{:.1f}%"]))
def test_width_is_the_widest_text(values, fmt) -> None:
    """A column's width equals the longest of all its texts: from the extremes for integers and fixed-point
    numbers, from every value for other formats ("{}" of floats is not monotone: 0.25 is wider than 1.0)."""
    import pandas as pd

    from analyzer.output import _text, _width

    series = pd.Series(values, dtype=float)
    assert _width(series, fmt) == max(map(len, _text(series, fmt)))
    ints = pd.Series([None if v is None else int(v) for v in values], dtype="Int64")
    assert _width(ints, "{}") == max(map(len, _text(ints, "{}")))


@pytest.mark.parametrize("capture", ["scans_fin.pcap", "nat_nmap_ipv6.pcap", "scans_ordinary_dns.pcap"])
def test_hosts_table_says_nothing_where_a_host_has_no_value(capture: str, capsys) -> None:
    """A host with no OS hint (or no evidence, or no MAC) gets no such line: not a line reading "nan" (a text
    column holds NaN for a missing value, and NaN is true)."""
    path = Path(__file__).resolve().parent.parent / "sample_pcaps" / capture
    packets = analyzer.read(path)
    probes = analyzer.match(packets)
    found, states = analyzer.scans(packets, probes)
    table = analyzer.hosts(packets, probes, states, found)
    assert table[["os", "os_evidence"]].isna().any(axis=None)  # the case this test is about
    assert main(["hosts", str(path)]) == 0
    text = capsys.readouterr().out
    assert "nan" not in text.lower()
    for h in table.itertuples():
        assert h.address in text
        assert (f"OS hint: {h.os}" in text) == isinstance(h.os, str)


def test_sweep_targets_that_answered_nothing_are_one_block() -> None:
    """zmap's sweep of six addresses (sample scans_zmap), folded from three silent targets up: the answering
    target keeps its table, the five silent ones are one block, in address order; not folded by default."""
    path = Path(__file__).resolve().parent.parent / "sample_pcaps" / "scans_zmap.pcap"
    packets = analyzer.read(path)
    found, states = analyzer.scans(packets, analyzer.match(packets))
    folded = scans_table(found, states, {"capture": path.name}, silent_over=3)
    assert "-> 10.77.40.2  [zmap;" in folded and "22/tcp  open" in folded
    assert "-> 5 targets that answered nothing  [zmap; horizontal; 5 probes]" in folded
    assert "  10.77.40.0, 10.77.40.4, 10.77.40.5, 10.77.40.6, 10.77.40.7\n  ports: 22/tcp filtered ×5" in folded
    assert "-> 10.77.40.4  [" not in folded
    whole = scans_table(found, states, {"capture": path.name})
    assert all(f"-> 10.77.40.{i}  [zmap;" in whole for i in (0, 2, 4, 5, 6, 7))


def test_rtt_table_folds_targets_that_answered_nothing() -> None:
    """The rtt table of zmap's six-address sweep (sample scans_zmap), folded from three silent targets up: the
    answering target keeps its table, the five silent ones are one block; the JSON keeps all six."""
    path = Path(__file__).resolve().parent.parent / "sample_pcaps" / "scans_zmap.pcap"
    packets = analyzer.read(path)
    ports, family_table = analyzer.signal_families(packets, analyzer.match(packets))
    meta = {"capture": path.name, "method": "robust", "confidence": 0.99, "probes_matched": 1,
            "unsolicited_replies": 0}
    folded = "\n".join(line for block in rtt_table_blocks(ports, meta, family_table, silent_over=3) for line in block)
    assert "\n10.77.40.2 (tcp)\n" in folded and "\n10.77.40.4 (tcp)\n" not in folded
    assert ('5 targets that answered no probe (the "no answer" family each; no RTT):\n'
            "  10.77.40.0, 10.77.40.4, 10.77.40.5, 10.77.40.6, 10.77.40.7\n  ports: 22/tcp ×5") in folded
    whole = rtt_table(ports, meta, family_table)
    assert all(f"\n10.77.40.{i} (tcp)\n" in whole for i in (0, 2, 4, 5, 6, 7))
    assert len(json.loads(rtt_json(ports, meta, family_table))["targets"]) == 6


@pytest.mark.parametrize("capture", sorted(p.name for p in (Path(__file__).resolve().parent.parent
                                                              / "sample_pcaps").glob("*.pcap")))
def test_rtt_table_of_few_port_targets_is_the_per_target_table(capture: str, monkeypatch) -> None:
    """Targets of a few ports have their cells made all at once, each with its own widths: the same table as
    target by target (every sample's targets have at most nine ports)."""
    from analyzer import output

    path = Path(__file__).resolve().parent.parent / "sample_pcaps" / capture
    packets = analyzer.read(path)
    ports, family_table = analyzer.signal_families(packets, analyzer.match(packets))
    meta = {"capture": capture, "method": "robust", "confidence": 0.99, "probes_matched": 0, "unsolicited_replies": 0}
    together = rtt_table(ports, meta, family_table)
    monkeypatch.setattr(output, "FEW_PORTS", 0)
    assert rtt_table(ports, meta, family_table) == together
