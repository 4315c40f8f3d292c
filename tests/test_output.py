"""Output helpers checked against the system they stand in for."""

from __future__ import annotations

import socket

import pytest

from analyzer.output import service_name


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
    """Big results are encoded by pandas' C encoder as one JSON fragment, small ones as dicts: same JSON."""
    import json
    from pathlib import Path

    import analyzer
    from analyzer import output

    packets = analyzer.read(Path(__file__).resolve().parents[1] / "sample_pcaps" / capture)
    fams, family_table = analyzer.signal_families(packets, analyzer.match(packets))
    small = output.rtt_json(fams, {"capture": capture}, family_table)
    monkeypatch.setattr(output, "INDENT_UP_TO_ROWS", -1)
    big = output.rtt_json(fams, {"capture": capture}, family_table)
    assert b"\n" in small and b"\n" not in big  # the two paths really ran
    assert json.loads(big) == json.loads(small)
    monkeypatch.setattr(output, "JSON_BLOCK_ROWS", 3)  # the records written three rows at a time: same text
    assert len(fams) > 3 and output.rtt_json(fams, {"capture": capture}, family_table) == big
