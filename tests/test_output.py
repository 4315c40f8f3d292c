"""Output helpers checked against the system they stand in for."""

from __future__ import annotations

import csv
import io
import json
import socket
import warnings
from pathlib import Path

import pytest
from conftest import realworld
from hypothesis import given, settings
from hypothesis import strategies as st

import analyzer
from analyzer.cli import main
from analyzer.render.output import rtt_json, rtt_table, rtt_table_blocks, scans_table, service_name


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


def spy_on_records_json(monkeypatch) -> list[int]:
    """The number of rows of each frame `output._records_json` encodes from now on (the list fills as it runs)."""
    from analyzer.render import output

    original, encoded = output._records_json, []

    def spy(frame, columns):
        encoded.append(len(frame))
        return original(frame, columns)

    monkeypatch.setattr(output, "_records_json", spy)
    return encoded


@pytest.mark.parametrize("capture", ["nat_qscan.pcap", "nat_agent.pcap", "nat_nmap_ipv6.pcap", "scans_multi.pcap"])
def test_big_rtt_json_says_what_the_small_one_says(capture: str, monkeypatch) -> None:
    """Big results are encoded column-wise (`_records_json`) as one JSON fragment per target of many ports, small
    ones (and a big result's small targets) as dicts by orjson: the same text, byte for byte, in blocks or not."""
    from analyzer.render import output

    packets = analyzer.read(Path(__file__).resolve().parents[1] / "sample_pcaps" / capture)
    fams, family_table = analyzer.signal_families(packets, analyzer.match(packets))
    small = output.rtt_json(fams, {"capture": capture}, family_table)
    monkeypatch.setattr(output, "INDENT_UP_TO_ROWS", -1)
    compact = output.rtt_json(fams, {"capture": capture}, family_table)  # (these targets: too few ports to defer)
    encoded = spy_on_records_json(monkeypatch)
    monkeypatch.setattr(output, "DEFER_ROWS", 1)
    big = output.rtt_json(fams, {"capture": capture}, family_table)
    assert b"\n" in small and b"\n" not in compact and len(encoded) == fams["target"].nunique()  # the paths ran
    assert big == compact and json.loads(big) == json.loads(small)
    monkeypatch.setattr(output, "BLOCK_ROWS", 3)  # the records written three rows at a time: same text
    assert len(fams) > 3 and output.rtt_json(fams, {"capture": capture}, family_table) == big


@pytest.mark.parametrize("capture", ["nat_qscan.pcap", "scans_multi.pcap", "nat_hping3.pcap"])
def test_table_written_in_blocks_is_the_same_table(capture: str, monkeypatch) -> None:
    """The rtt table made three rows at a time, with widths from the columns' extremes, is the table made
    whole: every line, and every column as wide as its widest cell (checked against all cells' texts)."""
    from pathlib import Path

    import analyzer
    from analyzer.render import output

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
            assert width == max(map(len, output._texts(text(slice(None)))))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(-1e7, 1e7, allow_nan=False)), min_size=1, max_size=40),
       st.sampled_from(["{}", "{:.2f}", "{:.1f}%"]))
def test_width_is_the_widest_text(values, fmt) -> None:
    """A column's width equals the longest of all its texts: from the extremes for integers and fixed-point
    numbers, from every value for other formats ("{}" of floats is not monotone: 0.25 is wider than 1.0)."""
    import pandas as pd

    from analyzer.render.output import _text, _width

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


@pytest.mark.parametrize("capture, first_line", [
    ("ProbingDataset__zmap_tcp_5k.pcapng", "1 port scan(s) of 5,000 target(s)"),
    ("StratosphereLinuxIPS__test8-malicious.pcap", "0 port scan(s), 1 other stage(s)"),
    ("hw13-01__nmap.pcapng", "4 port scan(s) of 1 target(s), 5 other stage(s)"),
])
def test_the_scans_tables_count_is_its_blocks(capture: str, first_line: str) -> None:
    """The first line counts what the table shows: a zmap sweep of 5,000 silent targets is one port scan (one
    block), an ARP sweep of 255 addresses one stage, and an nmap run's scans and stages one each (their blocks,
    counted in the table itself)."""
    path = realworld(capture)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", analyzer.CaptureWarning)
        packets = analyzer.read(path)
    found, states = analyzer.scans(packets, analyzer.match(packets))
    table = scans_table(found, states, {"capture": capture})
    assert table.splitlines()[0] == f"# {capture}: {first_line}"
    titles = [line for line in table.splitlines() if " -> " in line and line.endswith("]") and not line[0].isspace()]
    n_scans = sum(" scan (" in t for t in titles)
    assert first_line.startswith(f"{n_scans} port scan(s)")
    assert first_line.endswith("other stage(s)") == (len(titles) > n_scans)
    assert first_line.endswith(f", {len(titles) - n_scans} other stage(s)") or len(titles) == n_scans


def test_a_scan_of_one_instant_has_no_rate_and_a_table_of_hidden_ports_no_header(capsys) -> None:
    """A FIN scan of one probe (nDPI's tcp_scan) shows no rate in the table, and null in JSON, where a rate of
    one probe would be invented; a UDP scan whose 1,000 ports are all open|filtered (hping3) says so without an
    empty PORT table under it."""
    path = str(realworld("nDPI__tcp_scan.pcapng"))
    assert main(["scans", path]) == 0
    table = capsys.readouterr().out
    assert "FIN scan (F) 192.168.1.178 -> 192.168.1.2  [tool unknown; vertical; 1 probe]" in table
    assert "[tool unknown; vertical; 4 probes, 0.2/s]" in table
    assert main(["scans", path, "--format", "json"]) == 0
    rates = {s["type"]: s["rate"] for s in json.loads(capsys.readouterr().out)["scans"]}
    assert rates["FIN"] is None and rates["CONNECT"] == pytest.approx(4 / 18.802, abs=0.01)
    assert main(["scans", str(realworld("ProbingDataset__hping3.pcapng"))]) == 0
    blocks = capsys.readouterr().out.split("\n\n")
    udp = next(b for b in blocks if b.startswith("UDP scan"))
    assert udp.endswith("Not shown: 1,000 open|filtered ports (all of them)") and "PORT" not in udp
    syn = next(b for b in blocks if b.startswith("SYN scan"))
    assert "Not shown: 995 filtered ports\nPORT " in syn


def test_rtt_lists_targets_in_address_order(capsys) -> None:
    """A bot's probes of a hundred-odd Internet hosts (Stratosphere's test7): the table's targets come in address
    order (14.x before 108.x), as nmap lists hosts, not in the order of their texts, and the JSON and the CSV list
    every target in that order too; a count of one is singular."""
    import ipaddress

    path = str(realworld("StratosphereLinuxIPS__test7-malicious.pcap"))
    assert main(["rtt", path]) == 0
    lines = capsys.readouterr().out.splitlines()
    targets = [line.split(" ")[0] for line in lines if line.endswith((" (tcp)", " (udp)"))]
    assert len(targets) >= 5 and targets == sorted(targets, key=ipaddress.ip_address)
    assert main(["rtt", path, "--format", "json"]) == 0
    listed = [t["address"] for t in json.loads(capsys.readouterr().out)["targets"]]
    assert len(listed) > len(targets) and listed == sorted(listed, key=ipaddress.ip_address)
    assert [t for t in listed if t in set(targets)] == targets
    assert main(["rtt", path, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert list(dict.fromkeys(r["target"] for r in rows)) == listed
    assert main(["rtt", path, "--target", "138.197.52.48"]) == 0
    assert ", 1 probe answered, 48 unsolicited replies" in capsys.readouterr().out.splitlines()[0]


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
    from analyzer.render import output

    path = Path(__file__).resolve().parent.parent / "sample_pcaps" / capture
    packets = analyzer.read(path)
    ports, family_table = analyzer.signal_families(packets, analyzer.match(packets))
    meta = {"capture": capture, "method": "robust", "confidence": 0.99, "probes_matched": 0, "unsolicited_replies": 0}
    together = rtt_table(ports, meta, family_table)
    monkeypatch.setattr(output, "FEW_PORTS", 0)
    assert rtt_table(ports, meta, family_table) == together


def test_column_wise_json_keeps_negative_zero_in_object_columns() -> None:
    """An object column holding 0.0 and -0.0 (a clock rate, say): hashing takes them for one value, JSON does not."""
    import orjson
    import pandas as pd

    from analyzer.render import output

    frame = pd.DataFrame({"ts_rate": pd.array([None, 0.0, -0.0, 0.0], dtype=object)})
    written = b"".join(output._records_json(frame, ["ts_rate"]))
    assert written == orjson.dumps(output._records(frame, ["ts_rate"]))
    assert written.count(b"-0.0") == 1


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_column_wise_json_is_orjsons_text(data) -> None:
    """`_records_json` writes, column by column, exactly the text orjson writes for `_records` of the same frame:
    integers (of any range, and of a small one: coded by offset), nullable integers, floats (NaN, -0.0,
    infinities, any digits; rounded as the output rounds them), booleans, text with commas, quotes, backslashes,
    control characters and other scripts, missing values; in blocks of any size (the last one short or full)."""
    import orjson
    import pandas as pd

    from analyzer.render import output

    n = data.draw(st.integers(0, 12))
    floats = st.one_of(st.floats(-1e300, 1e300), st.sampled_from([float("nan"), float("inf"), -float("inf")]))
    text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8)
    frame = pd.DataFrame({
        "port": data.draw(st.lists(st.integers(-2**63, 2**63 - 1), min_size=n, max_size=n)),
        "sent": data.draw(st.lists(st.integers(-3, 70_000), min_size=n, max_size=n)),
        "frame": data.draw(st.lists(st.integers(0, 2**40), min_size=n, max_size=n)),
        "reply_frame": pd.array(data.draw(st.lists(st.one_of(st.none(), st.integers(0, 10**9)), min_size=n,
                                                   max_size=n)), dtype="Int64"),
        "family": pd.array(data.draw(st.lists(st.one_of(st.none(), st.integers(-5, 2**40)), min_size=n, max_size=n)),
                           dtype="Int64"),
        "mean_us": pd.array(data.draw(st.lists(floats, min_size=n, max_size=n)), dtype="float64"),
        "loss": pd.array(data.draw(st.lists(st.sampled_from([0.0, -0.0, 0.25, 1 / 3]), min_size=n, max_size=n)),
                         dtype="float64"),
        "first": pd.array(data.draw(st.lists(st.floats(1e9, 2e9), min_size=n, max_size=n)), dtype="float64"),
        "open": data.draw(st.lists(st.booleans(), min_size=n, max_size=n)),
        "rst": pd.array(data.draw(st.lists(st.one_of(st.none(), text), min_size=n, max_size=n)), dtype="str"),
        "ts_rate": pd.array(data.draw(st.lists(st.one_of(st.none(), floats), min_size=n, max_size=n)), dtype=object),
    })
    columns = list(frame.columns)
    block_rows = data.draw(st.sampled_from([1, 2, 3, 5, 12, output.BLOCK_ROWS]))
    spread_rows = data.draw(st.sampled_from([1, 3, output.SPREAD_ROWS]))  # (small: integers written digit by digit)
    saved = output.BLOCK_ROWS, output.SPREAD_ROWS
    try:
        output.BLOCK_ROWS, output.SPREAD_ROWS = block_rows, spread_rows
        written = b"".join(output._records_json(frame, columns))
    finally:
        output.BLOCK_ROWS, output.SPREAD_ROWS = saved
    assert written == orjson.dumps(output._records(frame, columns))


@pytest.mark.parametrize("capture", ["scans_multi.pcap", "scans_udp.pcap", "scans_zmap.pcap"])
def test_big_scans_json_says_what_the_small_one_says(capture: str, monkeypatch) -> None:
    """A big scans result writes the port states of its scans of many ports column-wise: the same text as
    the dicts orjson writes, byte for byte, and the same document as the indented small result."""
    from analyzer.render import output

    path = Path(__file__).resolve().parents[1] / "sample_pcaps" / capture
    packets = analyzer.read(path)
    probes = analyzer.match(packets)
    found, states = analyzer.scans(packets, probes)
    host_table = analyzer.hosts(packets, probes, states, found)
    small = output.scans_json(found, states, host_table, {"capture": capture})
    monkeypatch.setattr(output, "INDENT_UP_TO_ROWS", -1)
    compact = output.scans_json(found, states, host_table, {"capture": capture})
    encoded = spy_on_records_json(monkeypatch)
    monkeypatch.setattr(output, "DEFER_ROWS", 1)
    big = b"".join(output.scans_json_pieces(found, states, host_table, {"capture": capture}))
    assert b"\n" in small and b"\n" not in compact and sum(encoded) == len(states) > 0  # the paths ran
    assert big == compact and json.loads(big) == json.loads(small)


@pytest.mark.parametrize("protocol", ["tcp", "udp", "ip", "sctp"])
def test_service_names_of_many_rows_are_service_name(protocol: str) -> None:
    """The column-wise lookup of the JSON and CSV outputs names every port as service_name does."""
    import numpy as np
    import pandas as pd

    from analyzer.render.output import _service_names

    ports = np.r_[np.arange(0, 65536), np.arange(0, 200)]
    names = _service_names(pd.Series(ports), pd.Series([protocol] * len(ports)))
    assert names.tolist() == [service_name(int(p), protocol) for p in ports]
    mixed = _service_names(pd.Series([22, 53, 6, 22]), pd.Series(["tcp", "udp", "ip", "nope"]))
    assert mixed.tolist() == ["ssh", "domain", "tcp", "unknown"]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_lines_are_the_row_formats_lines(data) -> None:
    """`output._lines` (rows laid out column-wise as bytes) writes what the row format writes line by line:
    left-aligned columns two spaces apart, no trailing spaces; texts of several UTF-8 lengths, with spaces inside
    (a row's last cell never ends in one: the table's last columns are numbers, "-" where missing)."""
    import numpy as np

    from analyzer.render import output

    n, k = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 4))
    cell = st.text(alphabet=st.sampled_from("ab -*+→µ%…1"), min_size=1, max_size=6)
    last_cell = cell.map(lambda t: t.rstrip() or "-")
    columns = [data.draw(st.lists(last_cell if j == k - 1 else cell, min_size=n, max_size=n)) for j in range(k)]
    widths = [max(map(len, col)) + data.draw(st.integers(0, 2)) for col in columns]
    coded = []
    for col in columns:
        texts = sorted(set(col))
        coded.append((np.array([texts.index(t) for t in col]), texts))
    row = "  ".join(f"{{:<{w}}}" for w in widths).format
    assert output._lines(coded, widths) == [row(*line).rstrip() for line in zip(*columns)]


# ---------------------------------------------------------------- what rtt says where it has little to say

SAMPLES = Path(__file__).resolve().parents[1] / "sample_pcaps"


def test_rtt_of_a_capture_without_bare_syns_says_so(capsys) -> None:
    """A FIN scan's probes are no bare SYNs: rtt says so on stderr (one line, exit 0) and suggests --probes any."""
    assert main(["rtt", str(SAMPLES / "scans_fin.pcap")]) == 0
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert "no bare SYN probe in" in line and "--probes any" in line
    assert main(["rtt", str(SAMPLES / "scans_fin.pcap"), "--probes", "any"]) == 0
    assert capsys.readouterr().err == ""  # (what it suggests: RTTs, no note)
    assert main(["rtt", str(SAMPLES / "nat_qscan.pcap")]) == 0
    assert capsys.readouterr().err == ""


def test_rtt_of_a_target_not_in_the_capture_says_so(capsys) -> None:
    capture = str(SAMPLES / "nat_qscan.pcap")
    assert main(["rtt", capture, "--target", "10.77.1.1", "--target", "192.0.2.7", "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == f"synlens: note: --target 192.0.2.7: no probe to that address in {capture}\n"
    assert [t["address"] for t in json.loads(captured.out)["targets"]] == ["10.77.1.1"]


def test_what_no_target_can_show_is_said_once_per_capture(tmp_path, monkeypatch, capsys) -> None:
    """Two targets scanned qscan's way (tests/test_signals_sim.py's scenario, one machine each), then nmap -sS of a
    third: the signals no target could give are said once, after all targets; the note on the ports RTT could
    not test is said for the target it concerns, in words."""
    import dpkt
    import test_signals_sim as sim

    frames = []
    for target in ("10.9.0.1", "10.9.0.3"):
        monkeypatch.setattr(sim, "TARGET", target)
        pcap = sim.write_capture(tmp_path / f"{target}.pcap", lambda p: sim.Reply())
        with open(pcap, "rb") as fh:
            frames += list(dpkt.pcap.Reader(fh))
    merged = tmp_path / "two.pcap"
    with open(merged, "wb") as fh:
        writer = dpkt.pcap.Writer(fh, nano=True)
        for ts, data in sorted(frames, key=lambda f: f[0]):
            writer.writepkt(data, ts)
    assert main(["rtt", str(merged)]) == 0
    lines = capsys.readouterr().out.splitlines()
    for note in ("cannot tell by clock", "cannot tell by ip_id"):
        assert sum(line.startswith(note) for line in lines) == 1, lines
    assert lines.index("every target that answered:") > lines.index("10.9.0.3 (tcp)") > lines.index("10.9.0.1 (tcp)")
    # nmap -sS of one host (one probe a port, minutes apart): the + note, per target
    assert main(["rtt", str(realworld("PortScanDetector__half-scan-attacker.pcap"))]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line.startswith("+ ")] == [(
        "+ 1 sample per port: RTT cannot tell machines apart here (a split needs samples in 5 trips that probed the "
        "ports together)")] * 2


def test_targets_that_answered_nothing_miss_no_signal() -> None:
    """zmap's sweep: the targets that answered nothing get their "no answer" family and nothing else to read."""
    packets = analyzer.read(SAMPLES / "scans_zmap.pcap")
    ports, fams = analyzer.signal_families(packets, analyzer.match(packets))
    quiet = fams[fams["kind"] == "no answer"]
    assert len(quiet) >= 5 and all(list(u) == [] for u in quiet["unavailable"])
    text = rtt_table(ports, {"capture": "z", "method": "robust", "confidence": 0.99, "probes_matched": 1,
                             "unsolicited_replies": 0}, fams)
    blocks = text.split("\n\n")
    for block in blocks[1:]:
        if "(the \"no answer\" family" in block and "+ " not in block:
            assert "cannot tell" not in block, block


def test_udp_targets_get_no_tcp_wording(capsys) -> None:
    """nmap -sU of two hosts, RTTs from every probe: nothing about SYN/ACKs or TCP timestamps for UDP ports."""
    assert main(["rtt", str(realworld("PortScanDetector__udp-scan-attacker.pcap")), "--probes", "any"]) == 0
    text = capsys.readouterr().out
    assert "(udp)" in text and "cannot tell by ip_id" in text
    assert "SYN/ACK" not in text and "TCP timestamps" not in text


def test_text_json_and_report_give_one_median_per_family(tmp_path, capsys) -> None:
    """The RTT figures of a family are the same everywhere: the text's evidence, the JSON's families and the
    report's family table (`analyzer.families.family_medians`)."""
    capture = str(SAMPLES / "nat_qscan.pcap")
    assert main(["rtt", capture, "--format", "json"]) == 0
    [target] = json.loads(capsys.readouterr().out)["targets"]
    medians = {f["family"]: f["median_us"] for f in target["families"] if f["kind"] == "answered"}
    assert len(medians) == 2 and all(isinstance(m, float) for m in medians.values())
    assert main(["rtt", capture]) == 0
    text = capsys.readouterr().out
    assert f"RTT median {medians[0]:.2f} µs vs {medians[1]:.2f} µs (RTT families 0 and 1)" in text
    report = tmp_path / "r.html"
    assert main(["report", capture, "-o", str(report)]) == 0
    html = report.read_text()
    families_section = html[html.index('id="families"'):]
    assert all(f"{m:.2f}" in families_section for m in medians.values())
