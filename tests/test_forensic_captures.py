"""The forensic captures (tests/data/forensic/) against their truth files: what they hold is what the truth says.

These check the captures themselves, read by analyzer.read (not by the tshark the generator checked them
with): each truth parses and names its files, each capture reads without a warning, the frames the truth
names are where it says (probes from the scanner, replies to it), TTLs and MACs fit the hops and initial
TTLs the truth gives, nmap's -oX verdict is the truth's port table. What an analysis must make of them is
tested elsewhere. The captures are made by tests/support/make_forensic_captures.py (root, real tools).
"""

from __future__ import annotations

import ipaddress
import json
import re
import warnings
from pathlib import Path

import make_forensic_captures
import make_scan_captures
import pandas as pd
import pytest

import analyzer

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "forensic"
TRUTHS = {p.name.removesuffix(".truth.json"): json.loads(p.read_text(encoding="utf-8"))
          for p in sorted(DATA.glob("*.truth.json"))}  # fmt: skip
NAMES = sorted(TRUTHS)
SCANS = [n for n in NAMES if TRUTHS[n]["kind"] == "scan"]
ORDINARY = [n for n in NAMES if TRUTHS[n]["kind"] == "ordinary"]
NMAP = [n for n in NAMES if "nmap" in TRUTHS[n]]
STAGE_NAMES = {"host discovery", "port scan", "version detection", "OS detection", "traceroute", "scripts"}
NMAP_STATES = {"open", "closed", "filtered", "open|filtered", "closed|filtered", "unfiltered"}


@pytest.fixture(scope="module")
def packets() -> dict[str, pd.DataFrame]:
    """Every capture read once by analyzer.read, with the warnings it gave."""
    out = {}
    for name in NAMES:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = analyzer.read(str(DATA / TRUTHS[name]["file"]))
        out[name] = (frame, [str(w.message) for w in caught])
    return out


def _mac(value: int) -> str:
    return ":".join(f"{b:02x}" for b in int(value).to_bytes(6, "big"))


def test_every_capture_is_here_with_its_truth():
    assert NAMES == sorted(make_forensic_captures.NAMES)  # the generator makes exactly the committed captures
    assert set(ORDINARY) >= {"keepalive", "p2p_like", "netbios", "arp_resolution", "multicast"}
    pcaps = sorted(p.name for p in DATA.glob("*.pcap"))
    assert pcaps == sorted(t["file"] for t in TRUTHS.values())
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    for name, t in TRUTHS.items():
        assert f"`{t['file']}` | {t['bytes']} |" in readme, name  # a row per capture, with its current size
        for key in ("xml", "trace"):
            if "nmap" in t:
                assert (DATA / t["nmap"][key]).is_file(), (name, key)


@pytest.mark.parametrize("name", NAMES)
def test_truth_is_whole(name):
    t = TRUTHS[name]
    assert t["name"] == name and t["file"] == f"{name}.pcap"
    for key in ("description", "must_report", "commands", "sensor", "scans", "stages", "hosts", "verified"):
        assert t[key] or key in ("scans", "stages"), key
    size = (DATA / t["file"]).stat().st_size
    assert t["bytes"] == size < 300_000
    assert t["tcpdump_dropped"] == 0
    for label, c in t["verified"]["counts"].items():
        lo, hi = c["expected"]
        assert lo <= c["count"] <= hi, label
    if t["kind"] == "ordinary":
        assert t["scans"] == [] and t["stages"] == [] and t["scanner"] is None
    else:
        assert t["scans"] and t["stages"] and t["tool"]
        assert {s["stage"] for s in t["stages"]} <= STAGE_NAMES
        assert all(p["state"] in NMAP_STATES for s in t["scans"] for p in s["ports"])


@pytest.mark.parametrize("name", NAMES)
def test_reads_without_warnings(packets, name):
    frame, caught = packets[name]
    assert caught == []
    assert len(frame) == TRUTHS[name]["packets"]
    assert list(frame["frame"]) == list(range(1, len(frame) + 1))


@pytest.mark.parametrize("name", NAMES)
def test_hosts_fit_their_hops_and_initial_ttls(packets, name):
    """Every sender's TTLs, plus its routers to the sensor, start at a TTL the truth allows, and its frames
    carry the MAC the truth names (its own, or the router's that forwards it)."""
    frame, _ = packets[name]
    hosts = TRUTHS[name]["hosts"]
    assert {h["address"] for h in hosts} == set(frame["src"].dropna().astype(str))
    for h in hosts:
        mine = frame[frame["src"] == h["address"]]
        ttls = sorted(int(x) for x in mine["ttl"].dropna().unique())
        assert ttls == h["seen_ttls"], h["address"]
        assert all(ttl + h["hops_from_sensor"] in h["initial_ttl"] for ttl in ttls), h["address"]
        assert {_mac(m) for m in mine["eth_src"].dropna()} == {h["mac_at_sensor"]}, h["address"]
        assert (h["via"] is None) == (h["hops_from_sensor"] == 0)


@pytest.mark.parametrize("name", SCANS)
def test_stage_frames_are_the_scanners(packets, name):
    """A stage's probes are the scanner's frames to its targets, its replies frames to the scanner; its
    frames lie between its first and last, and no frame is in two stages."""
    frame, _ = packets[name]
    t = TRUTHS[name]
    rows = frame.set_index("frame")
    seen: set[int] = set()
    for stage in t["stages"]:
        frames = stage["probe_frames"] + stage["reply_frames"] + stage["other_frames"]
        assert len(frames) == len(set(frames)) == stage["frames"]
        assert min(frames) == stage["first_frame"] and max(frames) == stage["last_frame"]
        assert not seen & set(frames)
        seen |= set(frames)
        probes = rows.loc[stage["probe_frames"]]
        assert set(probes["src"].astype(str)) == {t["scanner"]}
        assert set(probes["dst"].astype(str)) == set(stage["targets"])
        assert set(rows.loc[stage["reply_frames"], "dst"].astype(str)) <= {t["scanner"]}
        assert sum(stage["probes"].values()) == len(stage["probe_frames"])


@pytest.mark.parametrize("name", NMAP)
def test_port_tables_are_nmaps_own(name):
    """The truth's port table is nmap's -oX verdict, and it holds only the port scan's ports: OS detection's
    U1 port and the scripts' datagrams stay out of it."""
    t = TRUTHS[name]
    xml = make_scan_captures.parse_nmap_xml(DATA / t["nmap"]["xml"])
    want = {(h["address"], p["protocol"], p["port"]): p["state"] for h in xml["hosts"] for p in h["ports"]}
    got = {(s["target"], p["protocol"], p["port"]): p["state"] for s in t["scans"] for p in s["ports"]}
    assert got == want
    scanned = {(p, port) for s in t["stages"] if s["stage"] == "port scan" for p, ports in s["ports"].items()
               for port in ports}  # fmt: skip
    assert {(p, port) for _, p, port in got} == scanned
    args = t["nmap"]["args"]
    if "-p" in args.split():
        listed = args.split()[args.split().index("-p") + 1]
        assert {port for _, _, port in got} == {int(x) for x in listed.split(",")}


@pytest.mark.parametrize("name", NMAP)
def test_every_packet_nmap_traced_is_in_the_capture(name):
    traced = TRUTHS[name]["verified"]["nmap_trace"]
    assert traced["sent"] == traced["sent_found"] > 0
    assert traced["received"] == traced["received_found"]
    assert all(u["what"].startswith("ARP") for u in TRUTHS[name]["verified"]["unclaimed_frames"])


def test_nmap_stages_are_there():
    def stages(name: str) -> dict[str, dict]:
        return {s["stage"]: s for s in TRUTHS[name]["stages"]}

    discovery = stages("nmap_discovery_syn")["host discovery"]
    assert discovery["probes"] == {"ICMP echo": 1, "ICMP timestamp": 1, "TCP ACK 80": 1, "TCP SYN 443": 1}
    assert list(stages("nmap_discovery_syn")) == ["host discovery", "port scan"]
    os_stage = stages("nmap_os")["OS detection"]
    assert {"SEQ", "ECN", "T2", "T3", "T4", "T5", "T6", "T7", "IE", "U1"} <= set(os_stage["probes"])
    assert os_stage["ports"]["udp"] and not {"udp"} & set(stages("nmap_os")["port scan"]["ports"])
    assert "OS detection" in stages("nmap_os_noopen")
    assert stages("nmap_version")["version detection"]["ports"] == {"tcp": [22, 80]}
    assert stages("nmap_scripts")["scripts"]["connections"] > 0
    assert list(stages("nmap_aggressive")) == ["port scan", "version detection", "OS detection", "traceroute",
                                               "scripts"]  # fmt: skip
    arp = stages("nmap_arp_discovery")["host discovery"]
    assert arp["technique"] == "ARP" and len(arp["targets"]) >= 30


@pytest.mark.parametrize("name", [n for n in SCANS if n.startswith("offlink_")])
def test_offlink_scanner_is_two_routers_away(packets, name):
    frame, _ = packets[name]
    t = TRUTHS[name]
    assert t["hops"]["scanner_to_sensor"] == 2 and t["sensor"]["at"] == "t2"
    scanner = next(h for h in t["hosts"] if h["address"] == t["scanner"])
    assert scanner["hops_from_sensor"] == 2 and scanner["via"] == "10.78.3.1"
    ttls = set(frame.loc[frame["src"] == t["scanner"], "ttl"].astype(int))
    assert max(ttls) <= 253 and ttls <= {ttl - 2 for ttl in scanner["initial_ttl"]}


def test_masscan_resets_of_both_kinds(packets):
    """masscan's own resets (TTL 255, 253 at the sensor) beside the scanner kernel's (64, here 62)."""
    frame, _ = packets["offlink_masscan"]
    rows = frame.set_index("frame")
    (stage,) = TRUTHS["offlink_masscan"]["stages"]
    own, kernel = stage["resets"].values()
    assert own and kernel
    assert set(rows.loc[own, "ttl"].astype(int)) == {253} and set(rows.loc[kernel, "ttl"].astype(int)) == {62}
    assert set(rows.loc[stage["probe_frames"], "ttl"].astype(int)) == {253}


def test_zmap_sweep_signature(packets):
    frame, _ = packets["offlink_zmap"]
    t = TRUTHS["offlink_zmap"]
    probes = frame.set_index("frame").loc[t["stages"][0]["probe_frames"]]
    assert set(probes["ip_id"].astype(int)) == {54321}
    assert sorted(probes["dst"].astype(str), key=ipaddress.ip_address) == sorted(t["swept"], key=ipaddress.ip_address)


def test_old_nmap_rotates_windows_and_decides_over_tries(packets):
    frame, _ = packets["old_nmap_windows"]
    t = TRUTHS["old_nmap_windows"]
    (stage,) = t["stages"]
    probes = frame.set_index("frame").loc[stage["probe_frames"]]
    assert set(probes["window"].astype(int)) == {1024, 2048, 3072, 4096}
    assert probes["ttl"].astype(int).between(37, 59).all() and probes["ip_id"].is_unique
    assert len(set(probes["sport"].astype(int))) == 2  # try 0 and try 1 each from its own source port
    assert len(t["scans"]) == 3
    for scan in t["scans"]:
        states = {p["port"]: p for p in scan["ports"]}
        assert len(states) == len(scan["ports"]) == 36
        lost = [p for p in scan["ports"] if p["first_probe_lost"]]
        assert lost and all(p["tries"] == 2 and p["decided_by_try"] == 1 and p["state"] != "filtered"
                            for p in lost)  # fmt: skip
        assert all(p["state"] == p["lab_state"] for p in scan["ports"])


def test_ordinary_traffic_holds_no_probe_shapes(packets):
    """The ordinary captures are what their names say: no SYN in the keep-alive capture (every session began
    before it), one UDP source port for the P2P client, NetBIOS only between 137s, ARP requests to three
    neighbours, multicast groups as the queries' destinations."""
    keep, _ = packets["keepalive"]
    assert not ((keep["tcp_flags"].fillna(0).astype(int) & 0x02) != 0).any()
    p2p, _ = packets["p2p_like"]
    t = TRUTHS["p2p_like"]["traffic"]
    udp_out = p2p[(p2p["ip_proto"] == 17) & (p2p["src"] == t["client"])]
    assert set(udp_out["sport"].astype(int)) == {t["client_udp_port"]}
    assert udp_out["dst"].nunique() == 70
    nb, _ = packets["netbios"]
    udp = nb[nb["ip_proto"] == 17]
    assert set(udp["sport"].astype(int)) == set(udp["dport"].astype(int)) == {137}
    arp, _ = packets["arp_resolution"]
    requests = arp[(arp["arp_op"] == 1) & (arp["src"] == "10.78.1.21")]
    assert set(requests["dst"].astype(str)) == set(TRUTHS["arp_resolution"]["traffic"]["neighbours"])
    mc, _ = packets["multicast"]
    groups = {str(d) for d in mc["dst"].dropna().astype(str) if re.match(r"2(2[4-9]|3\d)\.", d)}
    assert {"239.255.255.250", "224.0.0.251", "224.0.0.252"} <= groups
