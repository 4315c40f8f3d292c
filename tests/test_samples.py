"""Every bundled sample capture meets its machine-readable truth file (sample_pcaps/*.truth.json)."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import families_both_ways

import analyzer

SAMPLES = Path(__file__).resolve().parent.parent / "sample_pcaps"
TRUTHS = sorted(SAMPLES.glob("*.truth.json"))


def capture_of(truth_path: Path) -> Path:
    truth = json.loads(truth_path.read_text())
    name = truth.get("file") or truth.get("capture")
    return SAMPLES / Path(name).name


def partition(groups):
    return {frozenset(g) for g in groups}


def test_samples_are_small():
    sizes = {p.name: p.stat().st_size for p in SAMPLES.glob("*.pcap*") if p.suffix != ".json"}
    assert sizes and all(s < 1_000_000 for s in sizes.values()), sizes
    assert sum(sizes.values()) < 10_000_000


@pytest.mark.parametrize("truth_path", [t for t in TRUTHS if "families" in json.loads(t.read_text())],
                         ids=lambda p: p.name)
def test_families_meet_truth(truth_path):
    truth = json.loads(truth_path.read_text())
    packets = analyzer.read(capture_of(truth_path))
    ports, _ = analyzer.signal_families(packets, analyzer.match(packets))
    mine = ports[(ports["target"] == truth["target"]) & (ports["family_kind"] != "no answer")]
    # A port with too few replies to place is left without a family: unknown, never wrong. Every port
    # with three or more replies must be placed.
    placed = mine[mine["family"] >= 0]
    assert set(mine[mine["received"] >= 3]["port"]) <= set(placed["port"])
    got = {}
    for port, fam in zip(placed["port"].astype(int), placed["family"].astype(int)):
        got.setdefault(fam, set()).add(port)
    expected = {frozenset(set(g) & set(placed["port"])) for g in truth["families"]} - {frozenset()}
    covered = set().union(*expected)
    got_restricted = {frozenset(g & covered) for g in got.values() if g & covered}
    assert got_restricted == expected
    silent = set(ports[(ports["target"] == truth["target"]) & (ports["family_kind"] == "no answer")]["port"])
    assert set(truth.get("dropped", [])) <= silent


@pytest.mark.parametrize("truth_path", [t for t in TRUTHS if "scans" in json.loads(t.read_text())],
                         ids=lambda p: p.name)
def test_scans_meet_truth(truth_path):
    truth = json.loads(truth_path.read_text())
    packets = analyzer.read(capture_of(truth_path))
    found, states = analyzer.scans(packets, analyzer.match(packets))
    expected = truth["scans"]
    if not expected:
        assert found.empty
        return
    for scan in expected:
        mine = found[(found["scanner"] == scan["scanner"]) & (found["target"] == scan["target"])]
        types = set(mine["type"])
        want = {scan["type"]} | ({"ACK", "WINDOW"} if scan["type"] in ("ACK", "WINDOW") else set())
        assert types & want, (scan["type"], types)
        for port in scan.get("ports", []):
            st = states[(states["target"] == scan["target"]) & (states["port"] == port["port"])
                        & (states["protocol"] == port["protocol"]) & states["type"].isin(want)]
            assert len(st), port
            reading = st["type"].iloc[0]
            expected_state = port.get("states", {}).get(reading, port["state"]) if "states" in port else port["state"]
            assert st["state"].iloc[0] == expected_state, (port, reading)


# Every sample's hosts are Linux machines, each at most one router (a NAT gateway) from the capture.
LAB_INITIAL_TTL, LAB_MAX_HOPS = 64, 1


@pytest.mark.parametrize("capture", sorted(SAMPLES.glob("*.pcap")), ids=lambda p: p.name)
def test_os_hints_are_the_hosts_own(capture):
    """No OS hint or evidence from a scanning tool's packets (nmap's random TTLs, masscan's and zmap's 255) or
    from a TTL the protocol fixes (IPv6 neighbour discovery's 255, multicast listener reports' 1)."""
    packets = analyzer.read(capture)
    probes = analyzer.match(packets)
    found, states = analyzer.scans(packets, probes)
    table = analyzer.hosts(packets, probes, states, found)
    wrong, told = [], 0
    for h in table.itertuples():
        evidence = h.os_evidence if isinstance(h.os_evidence, str) else ""
        ttl = re.search(r"TTL \d+ \(initial (\d+), (\d+) hops\)", evidence)
        told += ttl is not None
        if ttl and (int(ttl.group(1)) != LAB_INITIAL_TTL or int(ttl.group(2)) > LAB_MAX_HOPS):
            wrong.append(f"{h.address}: {evidence}")
        if isinstance(h.os, str) and not h.os.startswith("Linux"):
            wrong.append(f"{h.address}: {h.os}")
    assert not wrong, wrong
    assert told  # the hosts' own packets still tell


def test_batched_targets_read_as_one_by_one(monkeypatch):
    """The targets signal_families reads in a batch (zmap's sweep: five that answered nothing, one that answered
    on its one port) come out exactly as the per-target loop makes them, in the same places."""
    packets = analyzer.read(SAMPLES / "scans_zmap.pcap")
    batched, one_by_one, ran = families_both_ways(packets, analyzer.match(packets), monkeypatch)
    assert sorted(ran) == ["_silent_targets", "_single_port_targets"]  # both batches really ran
    for got, want in zip(batched, one_by_one):
        pd.testing.assert_frame_equal(got, want)
