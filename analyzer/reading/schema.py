"""The packets table, declared once as data.

Every frame a reader decodes becomes one row. Each column is listed here with its pandas dtype and its
meaning; `frame_from_columns` builds (and validates) a DataFrame from numpy arrays against this table, so
the wire format of the table can be read off this file alone. Nullable dtypes (``UInt16`` …) hold
"absent" for fields a packet does not have (no ports on ICMP, no quoted header on a SYN).

Storage: the native reader stores a column that no row holds (and the presence mask of a column that every
row holds) as one repeated value, a read-only zero-stride numpy view, so a TCP scan's ICMP and quoted-header
columns cost no memory. pandas copies such an array before any write to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str
    meaning: str


PACKET_COLUMNS: tuple[Column, ...] = (
    Column("frame", "int64", "1-based record number in the capture file (as Wireshark numbers frames)"),
    Column("ts_ns", "int64", "capture timestamp, integer nanoseconds since the Unix epoch"),
    Column("iface", "uint16", "pcapng interface id (0 for classic pcap)"),
    Column("linktype", "uint16", "link-layer header type of the record (1 Ethernet, 113 SLL, 276 SLL2, …)"),
    Column("caplen", "uint32", "bytes captured"),
    Column("wirelen", "uint32", "bytes on the wire"),
    Column("eth_src", "UInt64", "source MAC address as a 48-bit integer (Ethernet / SLL with 6-byte address)"),
    Column("eth_dst", "UInt64", "destination MAC address as a 48-bit integer (Ethernet only)"),
    Column("vlan", "UInt16", "outermost 802.1Q/802.1ad VLAN id"),
    Column("ethertype", "UInt16", "network protocol of the frame (0x0800 IPv4, 0x86DD IPv6, 0x0806 ARP, …)"),
    Column("ip_version", "uint8", "4, 6, or 0 when the frame carries no decodable IP packet"),
    Column("src", "category", "IP source address, text form (ARP: sender protocol address)"),
    Column("dst", "category", "IP destination address, text form (ARP: target protocol address)"),
    Column("arp_op", "UInt16", "ARP operation (1 request, 2 reply) for ARP frames over IPv4"),
    Column("ip_proto", "UInt8", "transport protocol after IPv6 extension headers (6 TCP, 17 UDP, 1/58 ICMP)"),
    Column("ttl", "UInt8", "IPv4 TTL or IPv6 hop limit"),
    Column("ip_id", "UInt32", "IPv4 identification; IPv6 fragment-header identification when present"),
    Column("ip_len", "UInt32", "IP total length from the header (IPv6: payload length + 40)"),
    Column("fragment", "bool", "packet is a non-first fragment or has more-fragments set (no L4 header read)"),
    Column("sport", "UInt16", "TCP/UDP source port"),
    Column("dport", "UInt16", "TCP/UDP destination port"),
    Column("tcp_flags", "UInt16", "TCP flags, 9 bits (FIN 0x01 … CWR 0x80, NS 0x100); see analyzer.protocols"),
    Column("seq", "UInt32", "TCP sequence number"),
    Column("ack", "UInt32", "TCP acknowledgment number (as on the wire, even when the ACK flag is clear)"),
    Column("window", "UInt16", "TCP window (unscaled)"),
    Column("tcp_options", "UInt64", "TCP option kinds in wire order, one byte each, first option in the top "
                                    "byte used (up to 8); absent when the header has no options"),
    Column("mss", "UInt16", "TCP MSS option value"),
    Column("wscale", "UInt8", "TCP window-scale option shift"),
    Column("tsval", "UInt32", "TCP timestamp option TSval"),
    Column("tsecr", "UInt32", "TCP timestamp option TSecr"),
    Column("payload_len", "UInt32", "transport payload bytes by the IP length (TCP/UDP), whether captured or not"),
    Column("icmp_type", "UInt8", "ICMP / ICMPv6 type"),
    Column("icmp_code", "UInt8", "ICMP / ICMPv6 code"),
    Column("icmp_id", "UInt16", "ICMP echo / timestamp identifier"),
    Column("icmp_seq", "UInt16", "ICMP echo / timestamp sequence"),
    Column("q_src", "category", "source address of the IP packet quoted by an ICMP error"),
    Column("q_dst", "category", "destination address of the quoted packet"),
    Column("q_proto", "UInt8", "transport protocol of the quoted packet"),
    Column("q_ip_id", "UInt32", "IPv4 identification of the quoted packet"),
    Column("q_sport", "UInt16", "source port of the quoted packet"),
    Column("q_dport", "UInt16", "destination port of the quoted packet"),
    Column("q_seq", "UInt32", "TCP sequence number of the quoted packet (ICMP quotes at least 8 bytes)"),
)

PACKET_DTYPES: dict[str, str] = {c.name: c.dtype for c in PACKET_COLUMNS}

_NULLABLE = {"UInt8": np.uint8, "UInt16": np.uint16, "UInt32": np.uint32, "UInt64": np.uint64}


def column(dtype: str, values: np.ndarray, present: np.ndarray | None = None) -> pd.api.extensions.ExtensionArray | np.ndarray:
    """Wrap a numpy array as the schema's dtype; `present` marks rows that hold a value (nullable dtypes)."""
    if dtype in _NULLABLE:
        values = np.asarray(values).astype(_NULLABLE[dtype], copy=False)
        mask = np.zeros(len(values), bool) if present is None else ~np.asarray(present, bool)
        return pd.arrays.IntegerArray(values, mask)
    if dtype == "category":
        return values  # already a Categorical, built by the decoder from unique addresses only
    return np.asarray(values).astype(dtype, copy=False)


def frame_from_columns(columns: dict[str, object], *, subset: bool = False) -> pd.DataFrame:
    """Build the packets table from arrays, in schema order, checking names and dtypes (`subset`: some
    columns of the schema only, as `analyzer.read(columns=…)` gives)."""
    missing = [] if subset else [c.name for c in PACKET_COLUMNS if c.name not in columns]
    extra = [k for k in columns if k not in PACKET_DTYPES]
    if missing or extra:
        raise ValueError(f"packets table columns: missing {missing}, unexpected {extra}")
    present = [c for c in PACKET_COLUMNS if c.name in columns]
    frame = pd.DataFrame({c.name: columns[c.name] for c in present}, copy=False)
    for c in present:
        if str(frame[c.name].dtype) != c.dtype:
            raise TypeError(f"column {c.name}: dtype {frame[c.name].dtype}, schema says {c.dtype}")
    return frame


def empty_packets() -> pd.DataFrame:
    """A packets table with no rows and every column of the schema."""
    cols: dict[str, object] = {}
    for c in PACKET_COLUMNS:
        if c.dtype == "category":
            cols[c.name] = pd.Categorical([], categories=pd.Index([], dtype=object))
        else:
            cols[c.name] = column(c.dtype, np.zeros(0, np.uint64 if c.dtype.startswith("U") else c.dtype))
    return frame_from_columns(cols)
