"""Scan forensics against the lab's forensic captures (tests/data/forensic/, made by
tests/support/make_forensic_captures.py; README.md there): each nmap stage read as a stage of the run, an older nmap's
per-probe windows read as one scan per target, tools named two routers from the scanner with the hops, and
ordinary traffic (keep-alives, peer-to-peer, NetBIOS, multicast, ARP resolution) read as no scan.

The truth files hold what the tools themselves said (nmap's -oX and --packet-trace, masscan's and zmap's
output, hping3's) and which frames each stage of the run sent, as Wireshark numbers them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import dpkt
import pytest

import analyzer
from analyzer.pipeline import Options, analyze

FORENSIC = Path(__file__).resolve().parent / "data" / "forensic"
TRUTHS = {p.name.removesuffix(".truth.json"): json.loads(p.read_text()) for p in sorted(FORENSIC.glob("*.truth.json"))}
_results: dict[str, analyzer.ScanResult] = {}


def result(name: str) -> analyzer.ScanResult:
    if name not in _results:
        packets = analyzer.read(FORENSIC / f"{name}.pcap")
        _results[name] = analyzer.scans(packets, analyzer.match(packets))
    return _results[name]


def test_every_capture_has_its_truth() -> None:
    assert len(TRUTHS) == 18 and all((FORENSIC / f"{name}.pcap").exists() for name in TRUTHS)


@pytest.mark.parametrize("name", [n for n, t in TRUTHS.items() if not t["scans"]])
def test_ordinary_traffic_is_no_scan(name: str) -> None:
    found = result(name).scans
    assert found.empty, found[["stage", "scanner", "target", "type"]]


@pytest.mark.parametrize("name", [n for n, t in TRUTHS.items() if t["scans"] and t["scans"][0]["type"] != "PING"])
def test_port_scans_and_states(name: str) -> None:
    """One port scan per (scanner, target, technique) the tool ran, named by the tool, with the tool's own
    port states: an older nmap rotating its window per probe reads as three scans, not twelve; a port whose
    first SYN was lost is decided by its retry."""
    found, states = result(name)
    scans = found[found["stage"] == "port scan"]
    for want in TRUTHS[name]["scans"]:
        mine = scans[(scans["scanner"] == want["scanner"]) & (scans["target"] == want["target"])]
        assert list(mine["type"]) == [want["type"]], (want["target"], mine[["type", "tool"]])
        st = states[states["phase"].isin(mine["phase"]) & (states["target"] == want["target"])]
        st = st.set_index(["protocol", "port"])["state"]
        wrong = {(p["protocol"], p["port"]): (st.get((p["protocol"], p["port"])), p["state"]) for p in want["ports"]
                 if st.get((p["protocol"], p["port"])) != p["state"]}
        assert not wrong, wrong


@pytest.mark.parametrize("name", [n for n, t in TRUTHS.items() if t["scans"] and t["scans"][0]["type"] != "PING"])
def test_tools_and_hops(name: str) -> None:
    """The tool is named wherever the sensor sits (a scan of three or more probes), and the hops between
    scanner and sensor are said: one number where the probes pin it, else a range that holds it."""
    truth = TRUTHS[name]
    found = result(name).scans
    scans = found[found["stage"] == "port scan"]
    tool = truth["tool"].split()[0]
    hops = truth["hops"]["scanner_to_sensor"]
    per_phase = scans.groupby("phase")["probes"].sum()  # (a sweep's phase probes each target once)
    for row in scans.itertuples():
        if per_phase[row.phase] < 3:
            assert row.tool == "unknown" and "too few" in row.tool_evidence
            continue
        assert row.tool == tool, (row.target, row.tool, row.tool_evidence)
        if row.hops is not None and row.hops == row.hops:
            assert row.hops == hops, row.tool_evidence
        else:
            low, high = map(int, re.search(r"the sensor is (\d+)–(\d+) hops", row.tool_evidence).groups())
            assert low <= hops <= high, row.tool_evidence


def test_a_tools_probes_sent_again_are_the_tools(tmp_path: Path) -> None:
    """nmap sends some UDP probes' payloads again, each copy with a random TTL of its own: they are the tool's
    packets, not the scanner's stack's. Here every copy sent again carries TTL 41, so they outnumber the four
    port unreachables the scanner's kernel sent (TTL 62: 64 less the two routers); the scanner's TTL is still
    its kernel's, read whole and in chunks of five records (where the screen must keep those copies)."""
    frames, seen, again = [], set(), 0
    with open(FORENSIC / "offlink_nmap_udp.pcap", "rb") as f:
        reader = dpkt.pcap.Reader(f)
        linktype = reader.datalink()
        for ts, buf in reader:
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if isinstance(ip, dpkt.ip.IP) and ip.p == 17 and dpkt.utils.inet_to_str(ip.src) == "10.78.1.10":
                key = (ip.id, ip.data.sport, ip.data.dport)
                if key in seen:
                    ip.ttl, ip.sum, again = 41, 0, again + 1
                    buf = bytes(eth)
                seen.add(key)
            frames.append((ts, buf))
    assert again > 4
    capture = tmp_path / "again.pcap"
    with open(capture, "wb") as f:
        writer = dpkt.pcap.Writer(f, linktype=linktype)
        for ts, buf in frames:
            writer.writepkt(buf, ts)
    for chunk in (0, 5):
        hosts = analyze(str(capture), ("scans", "hosts"), Options(chunk=chunk)).hosts.set_index("address")
        assert hosts.loc["10.78.1.10", "os_evidence"].startswith("TTL 62 (initial 64, 2 hops)"), chunk


def test_a_scanner_whose_every_packet_a_tool_wrote_says_so() -> None:
    """nmap's SYN scan of two closed ports, then OS detection: the scanner's kernel sent nothing (no SYN/ACK to
    reset), so every packet of 10.78.1.10 is nmap's, its TTL random. hosts names no TTL for it and says why,
    with the count of those packets, whole and in chunks."""
    capture = FORENSIC / "nmap_os_noopen.pcap"
    packets = analyzer.read(capture)
    sent = int(((packets["src"] == "10.78.1.10") & packets["ttl"].notna()).sum())
    assert sent > 5
    for chunk in (0, 5):
        hosts = analyze(str(capture), ("scans", "hosts"), Options(chunk=chunk)).hosts.set_index("address")
        assert hosts.loc["10.78.1.10", "os_evidence"] == f"no TTL of its own: nmap wrote all {sent} of its packets with a TTL"
        assert hosts.loc["10.78.4.10", "os_evidence"].startswith("TTL 63 (initial 64, 1 hop)")


def _our_frames(name: str, stage: str, targets: list[str]) -> set[int]:
    r = result(name)
    phases = r.scans.loc[(r.scans["stage"] == stage) & r.scans["target"].isin(targets), "phase"]
    return set(r.probes.loc[r.probes["phase"].isin(phases), "probe_frame"].astype(int))


@pytest.mark.parametrize("name, stage", [(n, s["stage"]) for n, t in TRUTHS.items() for s in t.get("stages", ())])
def test_each_stage_of_the_run(name: str, stage: str) -> None:
    """Each stage of an nmap run is found as such (host discovery, OS detection, version detection, scripts,
    traceroute beside the port scan), holding only frames nmap sent in that stage: no OS or script probe is
    read as a one-port scan of its own. A probe group counts once (its first transmission): the truth also
    lists retransmissions."""
    want = next(s for s in TRUTHS[name]["stages"] if s["stage"] == stage)
    ours = _our_frames(name, stage, want["targets"])
    theirs = set(want["probe_frames"]) | set(want.get("reply_frames", ())) | set(want.get("other_frames", ()))
    assert ours, f"{stage} not found"
    assert ours <= theirs, sorted(ours - theirs)
    for probe, frames in want.get("probe_frames_by_name", {}).items():
        assert ours & set(frames), f"{stage}: no {probe} probe of nmap's read as this stage's"
    tcp = [f for f in want["probe_frames"] if f not in set(want.get("udp_frames", ()))]
    if stage in ("version detection", "scripts", "traceroute", "host discovery"):  # (a port scan's retries are
        # one probe group each: its port states are held above)
        covered = len(ours & set(want["probe_frames"])) / len(tcp)
        assert covered >= (0.95 if stage != "scripts" else 0.9), f"{stage}: {covered:.0%} of nmap's probes"


def test_arp_sweep_finds_the_hosts_up() -> None:
    found = result("nmap_arp_discovery").scans
    assert set(found["stage"]) == {"host discovery"} and set(found["flags"]) == {"ARP"}
    assert set(found.loc[found["host_state"] == "up", "target"]) == {s["target"] for s in TRUTHS["nmap_arp_discovery"]["scans"]}


def test_a_run_reads_in_nmaps_order() -> None:
    """nmap -A: the SYN scan, version detection, OS detection, traceroute, scripts, in that order of time."""
    found = result("nmap_aggressive").scans.sort_values("first")
    assert list(found["stage"]) == ["port scan", "version detection", "OS detection", "traceroute", "scripts"]
    assert set(found["tool"]) - {"unknown"} == {"nmap"}
