"""The baseline a Python user would write by hand: dpkt, one packet at a time.

Decodes every record of a classic pcap as Ethernet and touches the fields synlens's matcher needs
(addresses, ports, flags, sequence and acknowledgment numbers). Prints the packet and TCP counts.

    python benchmarks/dpkt_loop.py CAPTURE
"""

from __future__ import annotations

import sys

import dpkt


def main(path: str) -> int:
    packets = tcp_count = 0
    checksum = 0  # keeps the touched fields live
    with open(path, "rb") as f:
        for ts, buf in dpkt.pcap.Reader(f):
            packets += 1
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if not isinstance(ip, dpkt.ip.IP):
                continue
            src, dst = ip.src, ip.dst
            tcp = ip.data
            if not isinstance(tcp, dpkt.tcp.TCP):
                continue
            tcp_count += 1
            checksum ^= hash((ts, src, dst, tcp.sport, tcp.dport, tcp.flags, tcp.seq, tcp.ack))
    print(f"{packets} packets, {tcp_count} TCP ({checksum & 0xFFFF:04x})")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
