"""Scan forensics on real captures that third parties made (../shared/realworld: SOURCES.tsv says where each
comes from, README.md what it holds as tshark shows it). Ordinary traffic must yield no scan; each scan with an
answer key must be found with its technique, targets, port states and tool, as one scan per run.

The expectations below are the captures' answer keys (their sources' words, and what the README verified
with tshark), not this analyzer's output: a scanner's own resets or completed handshakes show the ports that
answered even where the capture kept no reply.
"""

from __future__ import annotations

import warnings

import pandas as pd
import pytest
from conftest import REALWORLD

import analyzer

pytestmark = pytest.mark.skipif(not REALWORLD.is_dir(), reason=f"real captures not found at {REALWORLD}")


def ordinary() -> list[str]:
    if not REALWORLD.is_dir():
        return []
    lines = (REALWORLD / "ORDINARY.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


_cache: dict[str, analyzer.ScanResult] = {}


def result(name: str) -> analyzer.ScanResult:
    if name not in _cache:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", analyzer.CaptureWarning)  # (the spam bot's capture is cut short)
            packets = analyzer.read(REALWORLD / name)
        _cache[name] = analyzer.scans(packets, analyzer.match(packets))
    return _cache[name]


@pytest.mark.parametrize("name", ordinary())
def test_ordinary_traffic_holds_no_scan(name: str) -> None:
    found = result(name).scans
    assert found.empty, f"{name}: ordinary traffic read as scans:\n{found[['stage', 'scanner', 'target', 'type']]}"


@pytest.mark.parametrize("name, kind, scanner, port", [
    ("Alienvault-Demo__spambot.pcap", "client", "192.168.1.222", 25),
    ("packets__gnutella.pcap", "client", "10.1.4.176", 6346),
    ("network-traffic-analyzer__SYN.pcap", "flood", "10.0.0.2", 80),
    ("IntroToCybersecurity__traceroute.pcap", "traceroute", "193.137.173.217", None),
    ("packets__icmp_traceroute.pcapng", "traceroute", "192.168.100.138", None),
])
def test_arguable_cases_say_why_they_are_not_scans(name: str, kind: str, scanner: str, port: int | None) -> None:
    """The spam bot's fan-out to port 25, a Gnutella client's, a SYN flood and two traceroutes look like scans
    at a glance: each gets a note saying what it is and why it is no port scan, with frames to check."""
    notes = result(name).notes
    mine = notes[(notes["kind"] == kind) & (notes["scanner"] == scanner)]
    assert len(mine) == 1, notes
    note = mine.iloc[0]
    assert port is None or note["port"] == port
    assert "not a port scan" in note["evidence"] and len(note["frames"]) >= 2
    # The frames named are Wireshark's numbers of packets the note is about: the sender's.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", analyzer.CaptureWarning)
        by_frame = analyzer.read(REALWORLD / name).set_index("frame")
    for frame in note["frames"]:
        packet = by_frame.loc[int(frame)]
        assert str(packet["src"]) == scanner, (frame, packet["src"])
        assert port is None or int(packet["dport"]) == port, (frame, packet["dport"])


def test_a_flood_note_counts_its_source_ports():
    """The real SYN flood comes from a new source port each time; sent from one, as a tool with a fixed source
    port sends it (the flood's packets rewritten to one, its replies with them), the note says so, in the
    singular."""
    import numpy as np

    assert "from 1,658 source ports," in _flood_evidence(result("network-traffic-analyzer__SYN.pcap").notes)
    packets = analyzer.read(REALWORLD / "network-traffic-analyzer__SYN.pcap")
    for column, end in (("sport", "src"), ("dport", "dst")):
        ports = packets[column].to_numpy("float64", na_value=np.nan)
        ports[(packets[end].astype(str) == "10.0.0.2").to_numpy()] = 40000
        packets[column] = pd.Series(ports).astype("UInt16").array
    notes = analyzer.scans(packets, analyzer.match(packets)).notes
    assert "1,658 connection attempts to port 80 of 10.128.0.2 in 14.0 s from 1 source port, 1,658 answered" in (
        _flood_evidence(notes))


def _flood_evidence(notes: pd.DataFrame) -> str:
    floods = notes[notes["kind"] == "flood"]
    assert len(floods) == 1, notes
    return floods.iloc[0]["evidence"]


# (capture, scanner) → technique, tool (None: not named), target, {port: state} that the key fixes
KEYS = {
    ("ProbingDataset__nmap.pcapng", "192.168.181.140"): ("SYN", "nmap", "192.168.181.1", "open", (
        135, 139, 445, 902, 912, 2030, 2869, 49152, 49153, 49154, 49155, 55555)),
    ("ProbingDataset__nmap.pcapng", "192.168.181.141"): ("UDP", "nmap", "192.168.181.1", None, ()),
    ("ProbingDataset__nmap.pcapng", "192.168.181.142"): ("CONNECT", None, "192.168.181.1", "open", (
        135, 139, 445, 902, 912, 2030, 2869, 49152, 49153, 49154, 49155, 55555)),
    ("ProbingDataset__nmap.pcapng", "192.168.181.143"): ("NULL", "nmap", "192.168.181.1", None, ()),
    ("ProbingDataset__nmap.pcapng", "192.168.181.144"): ("XMAS", "nmap", "192.168.181.1", None, ()),
    ("ProbingDataset__nmap.pcapng", "192.168.181.145"): ("FIN", "nmap", "192.168.181.1", None, ()),
    ("ProbingDataset__nmap.pcapng", "192.168.181.146"): ("ACK", "nmap", "192.168.181.1", None, ()),
    ("ProbingDataset__nmap.pcapng", "192.168.181.147"): ("ACK", "nmap", "192.168.181.1", None, ()),
    ("ProbingDataset__nmap.pcapng", "192.168.181.148"): ("MAIMON", "nmap", "192.168.181.1", None, ()),
    ("ProbingDataset__unicornscan.pcapng", "192.168.181.150"): ("SYN", "unicornscan", "192.168.181.1", "open",
                                                                (135, 139, 445)),
    ("ProbingDataset__unicornscan.pcapng", "192.168.181.151"): ("UDP", None, "192.168.181.1", None, ()),
    ("ProbingDataset__unicornscan.pcapng", "192.168.181.152"): ("CONNECT", "unicornscan", "192.168.181.1", "open",
                                                                (135, 139, 445)),
    ("ProbingDataset__unicornscan.pcapng", "192.168.181.153"): ("NULL", "unicornscan", "192.168.181.1", None, ()),
    ("ProbingDataset__unicornscan.pcapng", "192.168.181.154"): ("XMAS", "unicornscan", "192.168.181.1", None, ()),
    ("ProbingDataset__unicornscan.pcapng", "192.168.181.155"): ("CUSTOM", "unicornscan", "192.168.181.1", None, ()),
    ("ProbingDataset__unicornscan.pcapng", "192.168.181.156"): ("FIN", "unicornscan", "192.168.181.1", None, ()),
    ("ProbingDataset__unicornscan.pcapng", "192.168.181.157"): ("ACK", "unicornscan", "192.168.181.1", None, ()),
    ("ProbingDataset__hping3.pcapng", "192.168.181.160"): ("SYN", "hping3", "192.168.181.1", "open",
                                                           (135, 139, 445, 902, 912)),
    ("ProbingDataset__hping3.pcapng", "192.168.181.161"): ("UDP", "hping3", "192.168.181.1", None, ()),
    ("ProbingDataset__hping3.pcapng", "192.168.181.162"): ("CUSTOM", "hping3", "192.168.181.1", None, ()),
    ("ProbingDataset__hping3.pcapng", "192.168.181.163"): ("XMAS", "hping3", "192.168.181.1", None, ()),
    ("ProbingDataset__hping3.pcapng", "192.168.181.164"): ("FIN", "hping3", "192.168.181.1", None, ()),
    ("ProbingDataset__hping3.pcapng", "192.168.181.165"): ("ACK", "hping3", "192.168.181.1", None, ()),
    ("PortScanDetector__half-scan-attacker.pcap", "192.168.56.101"): ("SYN", "nmap", "192.168.56.102", "open",
                                                                      (1112, 1839)),
    ("PortScanDetector__null-scan-attacker.pcap", "192.168.56.101"): ("NULL", "nmap", "192.168.56.103",
                                                                      "open|filtered", (4443, 4445)),
    ("PortScanDetector__full-scan-victim-1.pcap", "192.168.56.101"): ("CONNECT", None, "192.168.56.103", "open",
                                                                      (4443, 4445)),
    ("PortScanDetector__udp-scan-attacker.pcap", "192.168.56.101"): ("UDP", "nmap", "192.168.56.102", "open",
                                                                     (104, 105)),
    ("packets__synscan.pcapng", "172.16.0.8"): ("SYN", "nmap", "64.13.134.52", "open", (22, 53, 80)),
    ("hw13-01__nmap.pcapng", "192.168.67.1"): ("SYN", "nmap", "192.168.67.128", "open", (
        21, 22, 23, 25, 53, 80, 111, 139, 445, 512, 513, 514, 1099, 1524, 2049, 2121, 3306, 5432, 5900, 6000, 6667,
        8009, 8180)),
    ("Port-scans-detector-with-prolog__true_scan.pcap", "192.168.0.4"): ("SYN", None, "192.168.0.2", "open", (22, 80)),
}  # fmt: skip


@pytest.mark.parametrize("name, scanner", sorted(KEYS))
def test_keyed_scans(name: str, scanner: str) -> None:
    technique, tool, target, state, ports = KEYS[(name, scanner)]
    found, states = result(name)
    mine = found[(found["scanner"] == scanner) & (found["stage"] == "port scan") & (found["target"] == target)]
    types = set(mine["type"])
    assert technique in types or (technique == "ACK" and "WINDOW" in types), (technique, types)
    if tool:
        assert set(mine["tool"]) == {tool}, mine[["type", "tool", "tool_evidence"]]
    if state:
        st = states[(states["scanner"] == scanner) & (states["target"] == target) & states["phase"].isin(mine["phase"])]
        got = st[st["state"] == state].groupby("phase")["port"].apply(lambda p: tuple(sorted(p.astype(int))))
        assert got.size >= 1 and all(g == tuple(sorted(ports)) for g in got), got


def test_the_unknown_port_states_match_the_keys_too() -> None:
    """The keys' other port states: the closed ports of the SYN scans, nmap's UDP verdicts."""
    _, states = result("packets__synscan.pcapng")
    st = states.set_index("port")["state"]
    assert sorted(st[st == "closed"].index) == [25, 70, 113, 31337]
    assert (st.drop([22, 53, 80, 25, 70, 113, 31337]) == "filtered").all()
    _, states = result("PortScanDetector__udp-scan-attacker.pcap")
    for target in ("192.168.56.102", "192.168.56.103"):
        st = states[states["target"] == target].set_index("port")["state"]
        assert st[68] == "open|filtered" and st[104] == st[105] == "open"
        assert (st.drop([68, 104, 105]) == "closed").all() and len(st) == 150


def test_one_scan_per_run_whatever_the_tool_varies() -> None:
    """An older nmap rotates its SYN window (1024, 2048, 3072, 4096) and draws a TTL per probe: one SYN scan
    of scanme.nmap.org, one state per port over both tries of each, as nmap reported them."""
    found, states = result("packets__synscan.pcapng")
    assert len(found) == 1 and found.iloc[0]["probes"] == 1994 and found.iloc[0]["ports_probed"] == 1000
    assert not states.duplicated(["target", "port"]).any()


@pytest.mark.parametrize("name", sorted({name for name, _ in KEYS}))
def test_no_port_has_two_states_in_one_run(name: str) -> None:
    """A run of one scanner against one target with one technique is one phase: its phases never overlap in
    time, so no port can read one state in one phase and another in a second phase of the same run."""
    found, states = result(name)
    scans = found[found["stage"] == "port scan"]
    for _, run in scans.groupby(["scanner", "target", "type"]):
        run = run.sort_values("first")
        assert (run["first"].to_numpy()[1:] > run["last"].to_numpy()[:-1]).all(), run
    assert not states.duplicated(["phase", "target", "port", "protocol"]).any()


def test_nmap_stages_read_as_stages() -> None:
    """hw13-01: each of nmap's runs begins with its default host discovery (echo, SYN 443, ACK 80, timestamp),
    a stage of the run, not an ACK scan of port 80; packets/activeosfingerprinting: nmap's OS detection."""
    found, states = result("hw13-01__nmap.pcapng")
    discovery = found[found["stage"] == "host discovery"]
    assert len(discovery) == 5 and set(discovery["tool"]) == {"nmap"} and set(discovery["host_state"]) == {"up"}
    assert set(found.loc[found["stage"] == "port scan", "type"]) == {"SYN", "FIN", "XMAS", "UDP"}
    found, states = result("packets__activeosfingerprinting.pcapng")
    assert list(found["stage"]) == ["OS detection"] and found.iloc[0]["tool"] == "nmap" and states.empty
    evidence = found.iloc[0]["evidence"] + found.iloc[0]["tool_evidence"]
    for probe in ("SEQ", "ECN", "T2", "T3", "T5", "T6", "T7", "U1", "IE"):
        assert probe in evidence


def test_sweeps_and_horizontal_scans() -> None:
    found, _ = result("StratosphereLinuxIPS__test8-malicious.pcap")
    assert set(found["stage"]) == {"host discovery"} and set(found["flags"]) == {"ARP"}
    assert len(found) == 255 and set(found.loc[found["host_state"] == "up", "target"]) == {
        "192.168.1.1", "192.168.1.122", "192.168.1.245"}
    found, states = result("StratosphereLinuxIPS__test7-malicious.pcap")
    assert set(found["scanner"]) == {"192.168.2.16"} and set(found["type"]) == {"SYN"}
    assert found["target"].nunique() > 100 and set(states["port"].astype(int)) >= {23, 8080, 2323, 9527}


def test_crafted_single_probes_are_scans_but_name_no_tool() -> None:
    """nDPI's tcp_scan: one FIN, one NULL, one Xmas probe: no stack sends them, so they are scans; one probe
    is too few to tell a tool by its habits, and the output says so."""
    found, _ = result("nDPI__tcp_scan.pcapng")
    crafted = found[found["type"].isin(["FIN", "NULL", "XMAS"])]
    assert sorted(crafted["type"]) == ["FIN", "NULL", "XMAS"] and set(crafted["tool"]) == {"unknown"}
    assert crafted["tool_evidence"].str.contains("too few").all()


def test_frames_name_what_wireshark_shows() -> None:
    """The frames given as evidence are Wireshark's numbers: the deciding probe of an open port is a SYN to that
    port and its reply the SYN/ACK from it."""
    packets = analyzer.read(REALWORLD / "hw13-01__nmap.pcapng")
    _, states = result("hw13-01__nmap.pcapng")
    by_frame = packets.set_index("frame")
    for row in states[states["state"] == "open"].head(5).itertuples():
        probe, reply = by_frame.loc[int(row.probe_frame)], by_frame.loc[int(row.reply_frame)]
        assert int(probe["dport"]) == row.port and int(probe["tcp_flags"]) == 0x02
        assert int(reply["sport"]) == row.port and int(reply["tcp_flags"]) == 0x12
    assert pd.notna(states["probe_frame"]).all()


def test_hosts_of_a_home_network_as_an_investigator_reads_them() -> None:
    """The prolog project's capture of a home network: a NETGEAR router (192.168.0.1, its own frames at TTL 64),
    hosts on the Internet whose frames come through it, and a DHCP client asking from 0.0.0.0. The hosts are
    listed in address order; the router is a host with its own MAC, not a host behind itself; the hosts behind it
    name it as their gateway; 0.0.0.0 (a host with no address yet) is no host."""
    import ipaddress

    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", analyzer.CaptureWarning)
        packets = analyzer.read(REALWORLD / "Port-scans-detector-with-prolog__true_scan.pcap")
    found = analyzer.scans(packets, analyzer.match(packets))
    hosts = analyzer.hosts(packets, analyzer.match(packets), found.states, found.scans).set_index("address")
    assert list(hosts.index) == sorted(hosts.index, key=ipaddress.ip_address)
    assert "0.0.0.0" not in hosts.index and (packets["src"].astype(str) == "0.0.0.0").any()
    src, mac = packets["src"].astype(str).to_numpy(), packets["eth_src"].to_numpy("float64", na_value=np.nan)
    router_mac = np.unique(mac[src == "192.168.0.1"])
    assert len(router_mac) == 1
    behind = sorted(set(src[(mac == router_mac[0]) & (src != "192.168.0.1")]) - {"nan"})
    assert len(behind) >= 10
    as_text = hosts.loc["192.168.0.1", "mac"]
    assert int(as_text.replace(":", ""), 16) == int(router_mac[0]) and pd.isna(hosts.loc["192.168.0.1", "via"])
    assert hosts.loc["192.168.0.1", "os_evidence"].startswith("TTL 64 (initial 64, 0 hops)")
    assert (hosts.loc[behind, "via"] == as_text).all() and hosts.loc[behind, "mac"].isna().all()
