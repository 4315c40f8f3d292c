"""Tool signatures (analyzer/analysis/fingerprints.py): unicornscan's, on probes built as its source builds them
(tests/support/make_edge_captures.py, unicornscan_capture), and no tool renamed on the real captures."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import make_edge_captures as gen  # (tests/support is on sys.path: pyproject's pythonpath)
import pandas as pd
import pytest

import analyzer
from analyzer.analysis.fingerprints import tool_of_phase

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SAMPLES = REPO / "sample_pcaps"
EDGE = HERE / "data" / "edge"
SYN = 0x02
STATE_OF_REPLY = {"syn-ack": "open", "rst": "closed", None: "filtered"}


@pytest.fixture(scope="module")
def unicornscan_pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cap = gen.unicornscan_capture()
    cap.finalise()
    path = tmp_path_factory.mktemp("tools") / cap.file
    path.write_bytes(cap.pcap_bytes())
    return path


@pytest.fixture(scope="module")
def unicornscan_probes(unicornscan_pcap: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    packets = analyzer.read(unicornscan_pcap)
    probes = analyzer.match(packets)
    return packets, probes[probes["flags"] == SYN]


def test_cli_names_unicornscan_with_its_evidence(unicornscan_pcap: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "analyzer", "scans", str(unicornscan_pcap), "--format", "json"],
                       cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    (scan,) = json.loads(r.stdout)["scans"]
    assert (scan["scanner"], scan["target"]) == (gen.PROBER4, gen.TARGET4)
    assert (scan["type"], scan["flags"], scan["probes"]) == ("SYN", "S", len(gen.UNICORNSCAN_PORTS))
    assert scan["tool"] == "unicornscan"
    assert f"key 0x{gen.UNICORNSCAN_KEY:08x}" in scan["tool_evidence"]
    assert "syn cookie" in scan["tool_evidence"] and "-W 1" in scan["tool_evidence"]
    states = {p["port"]: p["state"] for p in scan["ports"]}
    assert states == {port: STATE_OF_REPLY[kind] for port, kind in gen.UNICORNSCAN_PORTS.items()}


def _with_seq(packets: pd.DataFrame, probes: pd.DataFrame, seqs: list[int]) -> pd.DataFrame:
    out = packets.copy()
    rows = out.index[out["frame"].isin(probes["probe_frame"])]
    out.loc[rows, "seq"] = pd.array(seqs, dtype="UInt32")
    return out


def _resend(packets: pd.DataFrame, probes: pd.DataFrame, sport: int | None = None,
            byteorder: str = "little", key: int = gen.UNICORNSCAN_KEY) -> pd.DataFrame:
    """The capture's probes as unicornscan would send them with another source port or sender byte order."""
    out = packets.copy()
    rows = out.index[out["frame"].isin(probes["probe_frame"])]
    if sport is not None:
        out.loc[rows, "sport"] = sport
    seqs = [gen.unicornscan_seq(str(d), int(dp), int(sp), key, byteorder)
            for d, dp, sp in zip(out.loc[rows, "dst"], out.loc[rows, "dport"], out.loc[rows, "sport"])]
    return _with_seq(out, probes, seqs)


@pytest.mark.parametrize("name,variant,technique", [
    ("as captured", lambda pk, pr: pk, "SYN"),
    ("-msf: its own sender's SYNs, read as CONNECT", lambda pk, pr: pk, "CONNECT"),
    ("big-endian sender", lambda pk, pr: _resend(pk, pr, byteorder="big"), "SYN"),
    ("-B 53: one source port", lambda pk, pr: _resend(pk, pr, sport=53), "SYN"),
    ("another run's key", lambda pk, pr: _resend(pk, pr, key=0x0BADC0DE), "SYN"),
])
def test_unicornscan_key_survives_its_options(unicornscan_probes, name, variant, technique) -> None:
    packets, probes = unicornscan_probes
    tool, evidence = tool_of_phase(variant(packets, probes), probes, technique)
    assert tool == "unicornscan", (name, evidence)


def _one_seq_off(packets: pd.DataFrame, probes: pd.DataFrame) -> pd.DataFrame:
    seqs = [int(s) for s in packets.set_index("frame").loc[probes["probe_frame"], "seq"]]
    seqs[3] = (seqs[3] + 1) % (1 << 32)
    return _with_seq(packets, probes, seqs)


def _nmap_like(packets: pd.DataFrame, probes: pd.DataFrame) -> pd.DataFrame:
    # nmap: one seq (its seqmask) and one source port for the phase: seq XOR ports varies with the port
    return _with_seq(_resend(packets, probes, sport=61234), probes, [0x12345678] * len(probes))


def _random_seqs(packets: pd.DataFrame, probes: pd.DataFrame) -> pd.DataFrame:
    return _with_seq(packets, probes, [(0x9E3779B9 * (i + 1)) % (1 << 32) for i in range(len(probes))])


@pytest.mark.parametrize("name,variant,n_probes", [
    ("one seq off by one", _one_seq_off, 8),
    ("nmap-like: one seq, one source port", _nmap_like, 8),
    ("random seqs", _random_seqs, 8),
    ("two probes are too few to tell", lambda pk, pr: pk, 2),
])
def test_other_seqs_are_not_unicornscan(unicornscan_probes, name, variant, n_probes) -> None:
    packets, probes = unicornscan_probes
    tool, evidence = tool_of_phase(variant(packets, probes), probes.iloc[:n_probes], "SYN")
    assert tool != "unicornscan", (name, evidence)


def _seq_off(at: int):
    def variant(packets: pd.DataFrame, probes: pd.DataFrame) -> pd.DataFrame:
        seqs = [int(s) for s in packets.set_index("frame").loc[probes["probe_frame"], "seq"]]
        seqs[at] = (seqs[at] + 1) % (1 << 32)
        return _with_seq(packets, probes, seqs)
    return variant


@pytest.mark.parametrize("name,variant,tool", [
    ("every seq its hash", lambda pk, pr: pk, "unicornscan"),
    ("a seq off within the probes screened", _seq_off(1), "unknown"),
    ("a seq off after them", _seq_off(6), "unknown"),
    ("the last seq off", _seq_off(-1), "unknown"),
])
def test_unicornscan_screen_of_the_first_probes(unicornscan_probes, monkeypatch, name, variant, tool) -> None:
    """The key is sought among the first probes before all are taken (tools._UNICORNSCAN_SCREEN, here 4 of the
    capture's probes): a phase whose first probes share a key is still checked whole."""
    packets, probes = unicornscan_probes
    assert len(probes) > 6
    monkeypatch.setattr("analyzer.analysis.fingerprints._UNICORNSCAN_SCREEN", 4)
    assert tool_of_phase(variant(packets, probes), probes, "SYN")[0] == tool, name


# What tools.py named in each real capture before the unicornscan signature (commit 5ed00c6); a
# signature added later must not rename any. nat_nmap_ipv6 (ten nmap -6 runs, each from its own source port) once
# read as masscan, whose TTL 255 / window 1024 template nmap's IPv6 SYNs share; masscan is now IPv4 only, and
# nothing else tells nmap there.
PREVIOUS_TOOLS = {
    "nat_agent.pcap": {"unknown"}, "nat_hping3.pcap": {"hping3"}, "nat_nmap_ipv6.pcap": {"unknown"},
    "nat_qscan.pcap": {"nmap"}, "scans_ack.pcap": {"nmap"}, "scans_connect.pcap": {"unknown"},
    "scans_fin.pcap": {"nmap"}, "scans_hping3.pcap": {"hping3"}, "scans_multi.pcap": {"nmap"},
    "scans_null.pcap": {"nmap"}, "scans_ordinary_dns.pcap": set(), "scans_ordinary_web.pcap": set(),
    "scans_syn.pcap": {"nmap"}, "scans_udp.pcap": {"nmap"}, "scans_xmas.pcap": {"nmap"},
    "scans_masscan.pcap": {"masscan"}, "scans_zmap.pcap": {"zmap"},  # (added with these captures, not before)
}  # fmt: skip


def test_every_sample_capture_is_listed() -> None:
    assert set(PREVIOUS_TOOLS) == {p.name for p in SAMPLES.glob("*.pcap")}


@pytest.mark.parametrize("name", sorted(PREVIOUS_TOOLS))
def test_real_captures_keep_their_tool(name: str) -> None:
    packets = analyzer.read(SAMPLES / name)
    found, _ = analyzer.scans(packets, analyzer.match(packets))
    assert set(found["tool"]) == PREVIOUS_TOOLS[name]


@pytest.mark.parametrize("path", sorted(p for p in EDGE.glob("*.pcap*") if p.stat().st_size
                                        and not p.name.startswith("unicornscan")), ids=lambda p: p.name)
def test_hand_built_captures_are_not_unicornscan(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", analyzer.CaptureWarning)
        packets = analyzer.read(path)
    found, _ = analyzer.scans(packets, analyzer.match(packets))
    assert "unicornscan" not in set(found["tool"])
