"""Captures as structures a mutator can change and write back: pcap records and pcapng blocks, and where each
packet's headers lie.

Written apart from analyzer's reader on purpose (a fuzzer that parsed with the code under test would share its
mistakes). Parsing stops at the first inconsistent record or block; what follows is kept, unparsed, as `tail`,
so that `parse(data).bytes() == data` for every input (tests/fuzz/test_fuzz.py checks it).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

PCAP_MAGICS = {0xA1B2C3D4: False, 0xA1B23C4D: True}  # magic -> nanosecond timestamps
SHB, IDB, EPB, SPB, OPB = 0x0A0D0D0A, 1, 6, 3, 2


@dataclass
class Record:
    """A pcap record: header fields and the captured bytes (caplen is written as len(data) unless `caplen` is
    set, which a mutator does to make the header lie)."""

    sec: int
    frac: int
    wirelen: int
    data: bytes
    caplen: int | None = None

    def bytes(self, endian: str) -> bytes:
        cap = len(self.data) if self.caplen is None else self.caplen
        return struct.pack(endian + "IIII", self.sec & 0xFFFFFFFF, self.frac & 0xFFFFFFFF, cap & 0xFFFFFFFF,
                           self.wirelen & 0xFFFFFFFF) + self.data


@dataclass
class Pcap:
    endian: str
    header: bytes  # the 24-byte global header, as read (mutators rewrite its fields)
    records: list[Record]
    tail: bytes = b""

    @property
    def linktype(self) -> int:
        return struct.unpack_from(self.endian + "I", self.header, 20)[0]

    def set_field(self, fmt: str, offset: int, value: int) -> None:
        h = bytearray(self.header)
        struct.pack_into(self.endian + fmt, h, offset, value)
        self.header = bytes(h)

    def packets(self) -> list[tuple[int, int]]:
        """(record index, link type) of every record."""
        lt = self.linktype & 0xFFFF
        return [(i, lt) for i in range(len(self.records))]

    def packet(self, i: int) -> bytes:
        return self.records[i].data

    def set_packet(self, i: int, data: bytes, keep_lengths: bool = False) -> None:
        r = self.records[i]
        if keep_lengths:
            r.caplen = len(r.data) if r.caplen is None else r.caplen
        else:
            r.wirelen = len(data)
        r.data = data

    def bytes(self) -> bytes:
        return self.header + b"".join(r.bytes(self.endian) for r in self.records) + self.tail


@dataclass
class Block:
    """A pcapng block: type and body (the bytes between the length fields), in its section's byte order.
    `length` set: the leading length field written instead of the true one (a lie)."""

    btype: int
    body: bytes
    endian: str
    length: int | None = None

    def bytes(self) -> bytes:
        body = self.body + bytes(-len(self.body) % 4)
        n = 12 + len(body)
        lead = n if self.length is None else self.length
        return struct.pack(self.endian + "II", self.btype, lead & 0xFFFFFFFF) + body + struct.pack(self.endian + "I", n)

    # Enhanced packet blocks: interface, timestamp, lengths, packet, options.
    def epb_fields(self) -> tuple[int, int, int, int, int]:
        return struct.unpack_from(self.endian + "IIIII", self.body, 0)

    def epb_packet(self) -> bytes:
        cap = self.epb_fields()[3]
        return self.body[20 : 20 + cap]

    def set_epb(self, *, iface: int | None = None, ts: int | None = None, packet: bytes | None = None,
                keep_lengths: bool = False) -> None:
        ifid, hi, lo, cap, wire = self.epb_fields()
        old = self.body[20 : 20 + cap]
        options = self.body[20 + cap + (-cap % 4):]
        if iface is not None:
            ifid = iface
        if ts is not None:
            hi, lo = (ts >> 32) & 0xFFFFFFFF, ts & 0xFFFFFFFF
        if packet is not None:
            old = packet
            if not keep_lengths:
                cap, wire = len(packet), len(packet)
        self.body = (struct.pack(self.endian + "IIIII", ifid & 0xFFFFFFFF, hi, lo, cap & 0xFFFFFFFF,
                                 wire & 0xFFFFFFFF) + old + bytes(-len(old) % 4) + options)

    # Interface descriptions: link type, snaplen, options.
    def idb_options(self) -> list[tuple[int, bytes]]:
        return parse_options(self.body[8:], self.endian)

    def set_idb(self, *, linktype: int | None = None, options: list[tuple[int, bytes]] | None = None,
                raw_options: bytes | None = None) -> None:
        lt, reserved, snap = struct.unpack_from(self.endian + "HHI", self.body, 0)
        head = struct.pack(self.endian + "HHI", lt if linktype is None else linktype & 0xFFFF, reserved, snap)
        if raw_options is not None:
            rest = raw_options
        elif options is not None:
            rest = write_options(options, self.endian)
        else:
            rest = self.body[8:]
        self.body = head + rest


@dataclass
class Pcapng:
    blocks: list[Block]
    tail: bytes = b""

    def interfaces(self) -> list[tuple[int, int]]:
        """(block index, link type) of each interface description, numbered as the file numbers them
        (per section: the caller maps ids)."""
        return [(i, struct.unpack_from(b.endian + "H", b.body, 0)[0]) for i, b in enumerate(self.blocks)
                if b.btype == IDB and len(b.body) >= 8]

    def packets(self) -> list[tuple[int, int]]:
        """(block index, link type) of every enhanced packet block whose interface is described."""
        out, section = [], []
        for i, b in enumerate(self.blocks):
            if b.btype == SHB:
                section = []
            elif b.btype == IDB and len(b.body) >= 8:
                section.append(struct.unpack_from(b.endian + "H", b.body, 0)[0])
            elif b.btype == EPB and len(b.body) >= 20:
                ifid, _, _, cap, _ = b.epb_fields()
                if ifid < len(section) and 20 + cap <= len(b.body):
                    out.append((i, section[ifid]))
        return out

    def packet(self, i: int) -> bytes:
        return self.blocks[i].epb_packet()

    def set_packet(self, i: int, data: bytes, keep_lengths: bool = False) -> None:
        self.blocks[i].set_epb(packet=data, keep_lengths=keep_lengths)

    def bytes(self) -> bytes:
        return b"".join(b.bytes() for b in self.blocks) + self.tail


Capture = Pcap | Pcapng


def parse(data: bytes) -> Capture | None:
    """The capture's structure, or None when it is neither a pcap nor a pcapng (nor long enough to be one)."""
    if len(data) >= 24:
        for endian in "<>":
            magic = struct.unpack_from(endian + "I", data)[0]
            if magic in PCAP_MAGICS:
                return _parse_pcap(data, endian)
    if len(data) >= 12 and struct.unpack_from("<I", data)[0] == SHB:
        return _parse_pcapng(data)
    return None


def _parse_pcap(data: bytes, endian: str) -> Pcap:
    records, pos = [], 24
    while pos + 16 <= len(data):
        sec, frac, cap, wire = struct.unpack_from(endian + "IIII", data, pos)
        if pos + 16 + cap > len(data):
            break
        records.append(Record(sec, frac, wire, data[pos + 16 : pos + 16 + cap]))
        pos += 16 + cap
    return Pcap(endian, data[:24], records, data[pos:])


def _parse_pcapng(data: bytes) -> Pcapng:
    blocks, pos, endian = [], 0, "<"
    while pos + 12 <= len(data):
        btype = struct.unpack_from(endian + "I", data, pos)[0]
        if btype == SHB:  # (the same in either byte order)
            bom = data[pos + 8 : pos + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                endian = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                endian = ">"
            else:
                break
        n = struct.unpack_from(endian + "I", data, pos + 4)[0]
        if n < 12 or n % 4 or pos + n > len(data) or struct.unpack_from(endian + "I", data, pos + n - 4)[0] != n:
            break
        body = data[pos + 8 : pos + n - 4]
        block = Block(btype, body, endian)
        if block.bytes() != data[pos : pos + n]:  # (padding a writer would not make: keep the bytes as they are)
            break
        blocks.append(block)
        pos += n
    return Pcapng(blocks, data[pos:])


def parse_options(raw: bytes, endian: str) -> list[tuple[int, bytes]]:
    """pcapng options (code, value) up to opt_endofopt or the first one that does not fit."""
    out, pos = [], 0
    while pos + 4 <= len(raw):
        code, length = struct.unpack_from(endian + "HH", raw, pos)
        if code == 0 or pos + 4 + length > len(raw):
            break
        out.append((code, raw[pos + 4 : pos + 4 + length]))
        pos += 4 + length + (-length % 4)
    return out


def write_options(options: list[tuple[int, bytes]], endian: str) -> bytes:
    if not options:
        return b""
    out = b"".join(struct.pack(endian + "HH", c, len(v)) + v + bytes(-len(v) % 4) for c, v in options)
    return out + struct.pack(endian + "HH", 0, 0)


# ---------------------------------------------------------------------------------------------- packet layers

LINK_ETHERNET, LINK_NULL, LINK_LOOP, LINK_SLL, LINK_SLL2 = 1, 0, 108, 113, 276
RAW_LINKS = (101, 12, 14, 228, 229)
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
IPV6_EXTENSIONS = (0, 43, 60, 135, 139, 140)


@dataclass
class Layers:
    """Where a packet's headers start (None: it has none, or not all of it is there)."""

    link: int  # link type
    ethertype_at: int | None = None  # the ethertype / protocol field of the link header
    l3: int | None = None
    version: int | None = None
    l4: int | None = None
    proto: int | None = None
    ext: list[tuple[int, int]] = field(default_factory=list)  # IPv6 extension headers: (offset, type)
    quoted: int | None = None  # an ICMP error's quoted IP header


def layers(data: bytes, link: int) -> Layers:
    out = Layers(link)
    if link == LINK_ETHERNET:
        pos = 12
        while pos + 2 <= len(data) and int.from_bytes(data[pos : pos + 2], "big") in VLAN_TPIDS:
            pos += 4
        if pos + 2 > len(data):
            return out
        out.ethertype_at = pos
        etype, l3 = int.from_bytes(data[pos : pos + 2], "big"), pos + 2
    elif link == LINK_SLL:
        if len(data) < 16:
            return out
        out.ethertype_at, etype, l3 = 14, int.from_bytes(data[14:16], "big"), 16
    elif link == LINK_SLL2:
        if len(data) < 20:
            return out
        out.ethertype_at, etype, l3 = 0, int.from_bytes(data[0:2], "big"), 20
    elif link in RAW_LINKS:
        etype, l3 = None, 0
    elif link in (LINK_NULL, LINK_LOOP):
        etype, l3 = None, 4
    else:
        return out
    if l3 >= len(data):
        return out
    version = data[l3] >> 4
    if etype not in (None, 0x0800, 0x86DD) or version not in (4, 6):
        return out
    out.l3, out.version = l3, version
    _network(data, out)
    return out


def _network(data: bytes, out: Layers) -> None:
    l3 = out.l3
    if out.version == 4:
        ihl = (data[l3] & 15) * 4
        if ihl < 20 or l3 + ihl > len(data):
            return
        out.proto, out.l4 = data[l3 + 9], l3 + ihl
    else:
        if l3 + 40 > len(data):
            return
        nh, pos = data[l3 + 6], l3 + 40
        while nh in IPV6_EXTENSIONS + (44, 51) and pos + 2 <= len(data):
            out.ext.append((pos, nh))
            size = 8 if nh == 44 else (data[pos + 1] + 2) * 4 if nh == 51 else (data[pos + 1] + 1) * 8
            nh, pos = data[pos], pos + size
        if pos > len(data):
            return
        out.proto, out.l4 = nh, pos
    if out.proto in (1, 58) and out.l4 + 8 < len(data) and data[out.l4] in ((3, 4, 5, 11, 12) if out.proto == 1
                                                                           else (1, 2, 3, 4)):
        out.quoted = out.l4 + 8
