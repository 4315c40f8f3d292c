"""Third-party scans of single hosts (../shared/realworld, README.md there): no target split into two machines.

Every capture counted here is a scan whose targets are each one machine, by what its source says and what the
packets show (README.md of shared/realworld):

* hw13-01__nmap.pcapng: nmap -sS, -sF, -sX, -sU of one Metasploitable VM on a host-only LAN;
* PortScanDetector__half-scan-attacker.pcap (-sS), __null-scan-attacker.pcap (-sN), __udp-scan-attacker.pcap
  (-sU): two VirtualBox hosts, each one machine; __full-scan-victim-1.pcap (-sT): one of them, captured on it;
* ProbingDataset__nmap.pcapng, __unicornscan.pcapng, __hping3.pcapng: one Windows host, many techniques;
* packets__synscan.pcapng: nmap's SYN scan of scanme.nmap.org (one Internet host), two tries a port;
* packets__activeosfingerprinting.pcapng: nmap's OS-detection probes to one Windows host;
* nDPI__tcp_scan.pcapng: SYN, FIN, NULL and Xmas probes to one LAN host;
* Port-scans-detector-with-prolog__true_scan.pcap: a connect scan of one LAN host (192.168.0.2); only that
  target counts: the capture's other targets are the web servers that host browses (CDN addresses, which may
  be many machines each).

Not counted: the masscan and zmap extracts and StratosphereLinuxIPS test7 (Internet sweeps, one probe to each of
thousands of addresses), test8 (ARP only), and the captures of ordinary traffic (no scan).

Each is read with RTTs from bare SYNs (the default) and from every probe (--probes any), with every signal.
"""

from __future__ import annotations

import pytest
from conftest import realworld

import analyzer

SINGLE_HOST_SCANS = {
    "hw13-01__nmap.pcapng": None, "PortScanDetector__half-scan-attacker.pcap": None,
    "PortScanDetector__null-scan-attacker.pcap": None, "PortScanDetector__udp-scan-attacker.pcap": None,
    "PortScanDetector__full-scan-victim-1.pcap": None, "ProbingDataset__nmap.pcapng": None,
    "ProbingDataset__unicornscan.pcapng": None, "ProbingDataset__hping3.pcapng": None,
    "packets__synscan.pcapng": None, "packets__activeosfingerprinting.pcapng": None, "nDPI__tcp_scan.pcapng": None,
    "Port-scans-detector-with-prolog__true_scan.pcap": {"192.168.0.2"},
}  # capture → the targets that count (None: every target)


@pytest.mark.parametrize("probes", ["syn", "any"])
@pytest.mark.parametrize("capture", sorted(SINGLE_HOST_SCANS))
def test_no_single_host_is_split_into_two_machines(capture: str, probes: str) -> None:
    packets = analyzer.read(realworld(capture))
    _, fams = analyzer.signal_families(packets, analyzer.match(packets), probes=probes)
    counted = SINGLE_HOST_SCANS[capture]
    answered = fams[(fams["kind"] == "answered") & (counted is None or fams["target"].isin(counted or ()))]
    split = answered.groupby(["target", "protocol"]).filter(lambda g: len(g) > 1)
    assert split.empty, split[["target", "protocol", "family", "ports", "signals", "evidence"]].to_string()


def test_the_counted_captures_hold_answers_to_split() -> None:
    """The test above could pass on captures with nothing to group: most of these targets answered, on many ports."""
    answering = 0
    for capture in ("hw13-01__nmap.pcapng", "PortScanDetector__half-scan-attacker.pcap",
                    "Port-scans-detector-with-prolog__true_scan.pcap"):
        packets = analyzer.read(realworld(capture))
        ports, _ = analyzer.signal_families(packets, analyzer.match(packets), probes="any")
        answering += int((ports["received"] > 0).sum())
    assert answering > 5000
