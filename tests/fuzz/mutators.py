"""The fuzzer's mutators: structure-aware ones for every layer synlens decodes, and generic ones.

Each takes a random generator, a capture's bytes and the corpus (for splicing), and returns new bytes, or None
when it does not apply to that capture (a pcap-header mutator given a pcapng, a TCP mutator given a capture
without TCP); `mutate` then picks another. Structure-aware mutators parse the capture (formats.parse), change
one field or header of one record, block or option to a value chosen to be awkward (the ends of its range, a
length one short or one long, a length past everything), and write it back with its container's lengths made
consistent, mostly (now and then they are left to lie), so that the change reaches the decoder.
"""

from __future__ import annotations

import gzip
import random
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import formats
from .formats import EPB, IDB, SHB, Block, Pcap, Pcapng

INT8 = (0, 1, 2, 0x7F, 0x80, 0xFE, 0xFF)
INT16 = (0, 1, 2, 3, 4, 7, 8, 20, 40, 60, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF, 1500, 1501)
INT32 = (0, 1, 4, 16, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 65535, 65536, 262144, 1 << 20,
         (1 << 20) + 1, (1 << 20) + 64, (1 << 20) + 68)
INT64 = (0, 1, -1, 1 << 31, -(1 << 31), 1 << 32, -(1 << 32), 1 << 62, -(1 << 62), (1 << 63) - 1, -(1 << 63),
         9_223_372_036, -9_223_372_037, 1_700_000_000, -1_700_000_000)
LINKTYPES = (0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 105, 127, 147, 0xFFFF)
TCP_KINDS = (0, 1, 2, 3, 4, 5, 8, 19, 28, 29, 30, 34, 69, 127, 128, 129, 200, 253, 254, 255)
IP_PROTOS = (6, 17, 1, 58, 0, 4, 41, 43, 44, 47, 50, 51, 60, 132, 255)

Corpus = Sequence[tuple[str, bytes]]
Mutator = Callable[[random.Random, bytes, Corpus], "bytes | None"]


def pick(rng: random.Random, values: Sequence[int], lo: int = 0, hi: int | None = None) -> int:
    """An awkward value (from `values`) most of the time, else any in [lo, hi]."""
    if hi is None or rng.random() < 0.7:
        return rng.choice(values)
    return rng.randint(lo, hi)


def _u(rng: random.Random, bits: int) -> int:
    return pick(rng, {8: INT8, 16: INT16, 32: INT32}[bits], 0, (1 << bits) - 1)


# ---------------------------------------------------------------------------------------------- containers

def pcap_header(rng: random.Random, data: bytes, corpus: Corpus) -> bytes | None:
    cap = formats.parse(data)
    if not isinstance(cap, Pcap):
        return None
    which = rng.randrange(6)
    if which == 0:  # magic: byte order and resolution
        magic = rng.choice((0xA1B2C3D4, 0xA1B23C4D, 0xA1B2CD34))
        cap.header = struct.pack(cap.endian + "I", magic) + cap.header[4:]
    elif which == 1:
        cap.set_field("H", 4, rng.choice((0, 1, 2, 3, 543, 0xFFFF)))
        cap.set_field("H", 6, rng.choice((0, 3, 4, 0xFFFF)))
    elif which == 2:
        cap.set_field("i", 8, pick(rng, (0, -1, 3600, -(1 << 31)), -(1 << 31), (1 << 31) - 1))
    elif which == 3:
        cap.set_field("I", 16, _u(rng, 32))  # snaplen
    else:  # the link-type field: a link type, with FCS bits, reserved bits or anything
        low = rng.choice(LINKTYPES)
        high = rng.choice((0, 0x04000000 | rng.randrange(16) << 28, rng.randrange(1 << 16) << 16, 0x03FF0000))
        cap.set_field("I", 20, low | high)
    return cap.bytes()


def _one_of(rng: random.Random, data: bytes, kind: type, items: str) -> tuple | None:
    """The capture parsed, if it is of `kind` and has some `items` (records, blocks), and one of them by number."""
    cap = formats.parse(data)
    if not isinstance(cap, kind) or not getattr(cap, items):
        return None
    return cap, rng.randrange(len(getattr(cap, items)))


def pcap_record(rng: random.Random, data: bytes, corpus: Corpus) -> bytes | None:
    found = _one_of(rng, data, Pcap, "records")
    if found is None:
        return None
    cap, i = found
    r = cap.records[i]
    which = rng.randrange(7)
    if which == 0:
        r.sec = _u(rng, 32)
    elif which == 1:
        r.frac = pick(rng, (999_999, 1_000_000, 999_999_999, 1_000_000_000, 0xFFFFFFFF), 0, 0xFFFFFFFF)
    elif which == 2:  # caplen lies
        r.caplen = pick(rng, tuple(max(len(r.data) + d, 0) for d in (-1, 1, 4)) + INT32, 0, 0xFFFFFFFF)
    elif which == 3:
        r.wirelen = pick(rng, (0, len(r.data) - 1, len(r.data) + 1) + INT32, 0, 0xFFFFFFFF)
    elif which == 4:
        cap.records.insert(rng.randrange(len(cap.records) + 1), formats.Record(r.sec, r.frac, r.wirelen, r.data))
    elif which == 5:
        del cap.records[i]
    else:
        j = rng.randrange(len(cap.records))
        cap.records[i], cap.records[j] = cap.records[j], cap.records[i]
    return cap.bytes()


def pcapng_block(rng: random.Random, data: bytes, corpus: Corpus) -> bytes | None:
    found = _one_of(rng, data, Pcapng, "blocks")
    if found is None:
        return None
    cap, i = found
    b = cap.blocks[i]
    which = rng.randrange(8)
    if which == 0:  # the leading length lies
        true = 12 + len(b.body)
        b.length = pick(rng, (true - 4, true + 4, true + 1, 12, 8, 0) + INT32, 0, 0xFFFFFFFF)
    elif which == 1 and b.btype != SHB:
        b.btype = pick(rng, (1, 2, 3, 4, 5, 6, 7, 0xBAD, 0x80000001, 0x40000BAD), 0, 0xFFFFFFFF)
    elif which == 2:
        cap.blocks.insert(i, Block(b.btype, b.body, b.endian))
    elif which == 3 and b.btype != SHB:
        del cap.blocks[i]
    elif which == 4:  # an unknown or custom block
        body = bytes(rng.randrange(256) for _ in range(rng.choice((0, 4, 8, 64))))
        cap.blocks.insert(i, Block(rng.choice((0xBAD, 0x0BAD, 0x40000BAD, 5, 4, 7, 10)), body, b.endian))
    elif which == 5:  # a new section (either byte order), its interfaces described again
        endian = rng.choice("<>")
        shb = Block(SHB, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1), endian)
        idbs = [_reorder(x, endian) for x in cap.blocks if x.btype == IDB]
        epbs = [_reorder(x, endian) for x in cap.blocks[i:] if x.btype == EPB][:rng.choice((0, 1, 5))]
        cap.blocks[i:i] = [shb, *idbs, *epbs]
    elif which == 6 and b.btype == EPB:  # the packet block's own lengths lie
        ifid, hi, lo, capl, wire = b.epb_fields()
        capl = pick(rng, (capl + 1, capl + 4, max(capl - 1, 0), len(b.body) - 20, len(b.body) - 19) + INT32)
        b.body = struct.pack(b.endian + "IIIII", ifid, hi, lo, capl & 0xFFFFFFFF, wire) + b.body[20:]
    else:  # a block cut short in the middle of the file
        b.body = b.body[: rng.randrange(len(b.body) + 1)]
    return cap.bytes()


def _reorder(block: Block, endian: str) -> Block:
    """A copy of an interface description or packet block written in another byte order (its fixed fields
    swapped; options dropped)."""
    if block.btype == IDB and len(block.body) >= 8:
        lt, res, snap = struct.unpack_from(block.endian + "HHI", block.body, 0)
        opts = formats.write_options(block.idb_options(), endian) if block.endian == endian else b""
        return Block(IDB, struct.pack(endian + "HHI", lt, res, snap) + opts, endian)
    if block.btype == EPB and len(block.body) >= 20:
        ifid, hi, lo, capl, wire = block.epb_fields()
        packet = block.body[20 : 20 + capl]
        return Block(EPB, struct.pack(endian + "IIIII", ifid, hi, lo, len(packet), wire) + packet, endian)
    return Block(block.btype, block.body, endian)


def pcapng_option(rng: random.Random, data: bytes, corpus: Corpus) -> bytes | None:
    """if_tsresol and if_tsoffset (every exponent; offsets to the ends of int64), and option lists that lie."""
    cap = formats.parse(data)
    if not isinstance(cap, Pcapng):
        return None
    idbs = [i for i, _ in cap.interfaces()]
    if not idbs:
        return None
    b = cap.blocks[rng.choice(idbs)]
    options = [(c, v) for c, v in b.idb_options() if rng.random() < 0.8]
    e = b.endian
    which = rng.randrange(6)
    if which == 0:
        exp = rng.choice((0, 1, 3, 6, 9, 10, 12, 19, 20, 28, 29, 30, 64, 100, 127, rng.randrange(128)))
        options = [o for o in options if o[0] != 9] + [(9, bytes([rng.choice((0, 0x80)) | exp]))]
    elif which == 1:
        offset = pick(rng, INT64, -(1 << 63), (1 << 63) - 1)
        options = [o for o in options if o[0] != 14] + [(14, struct.pack(e + "q", offset))]
    elif which == 2:  # both, and anything else an interface may say
        options += [(9, bytes([rng.randrange(256)])), (14, struct.pack(e + "q", rng.choice(INT64))),
                    (2, b"eth0\0"), (13, bytes([rng.randrange(256)])), (rng.randrange(1, 0xFFFF), b"x" * rng.randrange(9))]
        rng.shuffle(options)
    elif which == 3:  # an option whose length runs past the block (or is one short)
        raw = formats.write_options(options, e)
        code = rng.choice((9, 14, 2, 8, 13, 0x8001))
        length = pick(rng, (1, 8, 7, 9, 0xFFFF, 200), 0, 0xFFFF)
        value = bytes(rng.randrange(256) for _ in range(rng.randrange(min(length, 16) + 1)))
        b.set_idb(raw_options=raw[: max(len(raw) - 4, 0)] + struct.pack(e + "HH", code, length) + value)
        return cap.bytes()
    elif which == 4:  # opt_endofopt first, or options without it
        raw = formats.write_options(options + [(9, b"\x09")], e)
        b.set_idb(raw_options=rng.choice((struct.pack(e + "HH", 0, 0) + raw, raw[:-4])))
        return cap.bytes()
    else:  # the same option many times
        options += [(rng.choice((9, 14)), bytes(rng.randrange(256) for _ in range(rng.choice((1, 8)))))] * rng.randrange(2, 40)
    b.set_idb(options=options)
    return cap.bytes()


def pcapng_interfaces(rng: random.Random, data: bytes, corpus: Corpus) -> bytes | None:
    """Many interfaces (up to past the 65,536 a table's 16-bit column holds), packets moved between them."""
    cap = formats.parse(data)
    if not isinstance(cap, Pcapng) or not cap.interfaces():
        return None
    which = rng.randrange(3)
    first, _ = cap.interfaces()[0]
    if which == 0:
        n = rng.choice((1, 2, 255, 256, 4096, 65535, 65536, 65537))
        copies = [Block(IDB, cap.blocks[first].body, cap.blocks[first].endian) for _ in range(n)]
        cap.blocks[first + 1 : first + 1] = copies
    count = sum(1 for b in cap.blocks if b.btype == IDB)
    for i, _ in cap.packets():
        if rng.random() < (0.5 if which else 0.2):
            cap.blocks[i].set_epb(iface=rng.choice((0, count - 1, count, rng.randrange(count + 2), 0xFFFFFFFF, 65536)))
    if which == 2:
        for i, _ in cap.interfaces():
            if rng.random() < 0.5:
                cap.blocks[i].set_idb(linktype=rng.choice(LINKTYPES))
    return cap.bytes()


# ---------------------------------------------------------------------------------------------- packets

@dataclass
class _Packet:
    cap: formats.Capture
    index: int
    data: bytearray
    layers: formats.Layers


def _a_packet(rng: random.Random, data: bytes, want: Callable[[formats.Layers], bool]) -> _Packet | None:
    """A random packet of the capture whose layers `want` accepts (a few tries), as a mutable copy."""
    cap = formats.parse(data)
    if cap is None:
        return None
    packets = cap.packets()
    for _ in range(8):
        if not packets:
            return None
        index, link = rng.choice(packets)
        raw = cap.packet(index)
        lay = formats.layers(raw, link)
        if want(lay):
            return _Packet(cap, index, bytearray(raw), lay)
    return None


def _a_header(rng: random.Random, data: bytes, at: Callable[[formats.Layers], int | None], size: int,
              want: Callable[[formats.Layers], bool] = lambda lay: True) -> tuple[_Packet, bytearray, int] | None:
    """A packet whose header at `at(layers)` is there, `size` bytes of it captured: (packet, bytes, offset)."""
    p = _a_packet(rng, data, lambda lay: at(lay) is not None and want(lay))
    if p is None or len(p.data) < at(p.layers) + size:
        return None
    return p, p.data, at(p.layers)


def _written(rng: random.Random, p: _Packet) -> bytes:
    """The capture with the changed packet; its record's lengths follow it (mostly) or stay, lying."""
    p.cap.set_packet(p.index, bytes(p.data), keep_lengths=rng.random() < 0.1)
    return p.cap.bytes()


def link_layer(rng: random.Random, data: bytes, corpus: Corpus) -> bytes | None:
    """Ethernet (ethertype, VLAN tags stacked), Linux cooked v1/v2 (protocol, address length, type), loopback."""
    p = _a_packet(rng, data, lambda lay: lay.link in (0, 1, 108, 113, 276))
    if p is None:
        return None
    d, link = p.data, p.layers.link
    if link == 1:
        if rng.random() < 0.5:  # VLAN tags in front of the ethertype
            tags = b"".join(struct.pack("!HH", rng.choice(formats.VLAN_TPIDS), rng.randrange(1 << 16))
                            for _ in range(rng.choice((1, 2, 3, 4, 8))))
            d[12:12] = tags
        else:
            at = p.layers.ethertype_at if p.layers.ethertype_at is not None else 12
            d[at : at + 2] = struct.pack("!H", pick(rng, (0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8, 0x9100, 1500, 1536, 0)))
    elif link in (113, 276):
        which = rng.randrange(3)
        if which == 0 and p.layers.ethertype_at is not None:
            at = p.layers.ethertype_at
            d[at : at + 2] = struct.pack("!H", pick(rng, (0x0800, 0x86DD, 0x0806, 0x8100, 4, 0x0001)))
        elif which == 1:
            at, size = (4, 2) if link == 113 else (11, 1)
            if len(d) >= at + size:
                d[at : at + size] = _u(rng, 8 * size).to_bytes(size, "big")
        else:
            at = 2 if link == 113 else 8
            if len(d) >= at + 2:
                d[at : at + 2] = struct.pack("!H", pick(rng, (1, 0xFFFE, 772, 0x0200, 0xFFFF)))
    else:
        if len(d) >= 4:
            d[0:4] = rng.choice((2, 10, 24, 28, 30, 0x02000000, 0x1E000000, 0xFFFFFFFF)).to_bytes(4, rng.choice(("big", "little")))
    return _written(rng, p)


def relink(rng: random.Random, data: bytes, corpus: Corpus) -> bytes | None:
    """Every packet's IP datagram carried on another link type (the container's link type changed to match)."""
    cap = formats.parse(data)
    if cap is None:
        return None
    target = rng.choice((0, 1, 12, 101, 108, 113, 228, 229, 276))
    changed = False
    for index, link in cap.packets():
        raw = cap.packet(index)
        lay = formats.layers(raw, link)
        if lay.l3 is None:
            continue
        ip = raw[lay.l3 :]
        etype = 0x0800 if lay.version == 4 else 0x86DD
        mac = bytes(rng.randrange(256) for _ in range(6))
        head = {1: mac + mac + struct.pack("!H", etype),
                113: struct.pack("!HHH8sH", rng.choice((0, 4)), 1, 6, mac, etype),
                276: struct.pack("!HHIHBB8s", etype, 0, 2, 1, rng.choice((0, 4)), 6, mac),
                0: struct.pack("<I", 2 if lay.version == 4 else rng.choice((10, 24, 28, 30))),
                108: struct.pack("!I", 2 if lay.version == 4 else 24)}.get(target, b"")
        cap.set_packet(index, head + ip)
        changed = True
    if not changed:
        return None
    if isinstance(cap, Pcap):
        cap.set_field("I", 20, target)
    else:
        for i, _ in cap.interfaces():
            cap.blocks[i].set_idb(linktype=target)
    return cap.bytes()


def ipv4(rng: random.Random, data: bytes, corpus: Corpus) -> bytes | None:
    found = _a_header(rng, data, lambda lay: lay.l3, 20, lambda lay: lay.version == 4)
    if found is None:
        return None
    p, d, at = found
    which = rng.randrange(7)
    if which == 0:  # version and header length
        d[at] = pick(rng, (0x45, 0x44, 0x40, 0x4F, 0x46, 0x65, 0x35, 0x00, 0xFF), 0, 255)
    elif which == 1:  # total length
        d[at + 2 : at + 4] = struct.pack("!H", pick(rng, INT16 + (len(d) - at, len(d) - at + 1, len(d) - at - 1)))
    elif which == 2:  # flags and fragment offset
        d[at + 6 : at + 8] = struct.pack("!H", pick(rng, (0x2000, 0x4000, 0x0001, 0x1FFF, 0x3FFF, 0xFFFF, 0x8000), 0, 0xFFFF))
    elif which == 3:
        d[at + 8] = _u(rng, 8)  # TTL
    elif which == 4:
        d[at + 9] = rng.choice(IP_PROTOS)
    elif which == 5:  # options: the header grows
        words = rng.choice((1, 2, 10))
        d[at + 20 : at + 20] = bytes(rng.choice((0, 1, 7, 0x44, 0x94, 0xFF)) for _ in range(4 * words))
        d[at] = 0x40 | min(5 + words, 15)
        _grow_ip(p, 4 * words)
    else:
        d[at + 4 : at + 6] = struct.pack("!H", _u(rng, 16))  # IP ID
    return _written(rng, p)


def ipv6(rng: random.Random, data: bytes, corpus: Corpus) -> bytes | None:
    found = _a_header(rng, data, lambda lay: lay.l3, 40, lambda lay: lay.version == 6)
    if found is None:
        return None
    p, d, at = found
    which = rng.randrange(4)
    if which == 0:
        d[at + 4 : at + 6] = struct.pack("!H", pick(rng, INT16 + (len(d) - at - 40, len(d) - at - 39)))
    elif which == 1:
        d[at + 6] = rng.choice(IP_PROTOS + formats.IPV6_EXTENSIONS)
    elif which == 2:
        d[at] = pick(rng, (0x60, 0x40, 0x6F, 0x00), 0, 255)
    else:  # extension headers inserted after the fixed header (a chain, maybe long, lengths that lie)
        nh = d[at + 6]
        chain = b""
        kinds = [rng.choice(formats.IPV6_EXTENSIONS + (44, 51)) for _ in range(rng.choice((1, 2, 3, 9, 12)))]
        for k, nxt in zip(kinds, kinds[1:] + [nh]):
            if k == 44:
                chain += struct.pack("!BBHI", nxt, 0, rng.choice((0, 1, 8, 0xFFF9, 0xFFF8)), rng.randrange(1 << 32))
            else:
                hl = rng.choice((0, 0, 1, 255))
                size = (hl + 2) * 4 if k == 51 else (hl + 1) * 8
                chain += struct.pack("!BB", nxt, hl) + bytes(min(size, 64) - 2)
        d[at + 40 : at + 40] = chain
        d[at + 6] = kinds[0]
        _grow_ip(p, len(chain))
    return _written(rng, p)


def tcp(rng: random.Random, data: bytes, corpus: Corpus) -> bytes | None:
    found = _a_header(rng, data, lambda lay: lay.l4, 20, lambda lay: lay.proto == 6)
    if found is None:
        return None
    p, d, at = found
    which = rng.randrange(6)
    if which == 0:  # data offset
        d[at + 12] = (rng.randrange(16) << 4) | (d[at + 12] & 0x0F)
    elif which == 1:  # flags (all nine)
        flags = rng.choice((0x002, 0x012, 0x004, 0x014, 0x001, 0x000, 0x029, 0x011, 0x0C2, 0x1FF, rng.randrange(512)))
        d[at + 12] = (d[at + 12] & 0xF0) | (flags >> 8)
        d[at + 13] = flags & 0xFF
    elif which == 2:
        d[at + 4 : at + 12] = struct.pack("!II", _u(rng, 32), _u(rng, 32))
    elif which == 3:
        d[at + 14 : at + 16] = struct.pack("!H", _u(rng, 16))
    else:  # the options: any kinds (first kind 128 or more too), lengths that lie
        opts = b""
        for _ in range(rng.choice((1, 2, 3, 5, 10))):
            kind = rng.choice(TCP_KINDS)
            if kind in (0, 1):
                opts += bytes([kind])
                continue
            length = rng.choice((2, 3, 4, 10, 0, 1, 40, 255, rng.randrange(256)))
            value = bytes(rng.randrange(256) for _ in range(max(min(length, 40) - 2, 0)))
            opts += bytes([kind, length]) + value
        opts = opts[:40]
        opts += bytes(-len(opts) % 4)
        doff = (d[at + 12] >> 4) * 4
        old = max(doff - 20, 0) if at + doff <= len(d) else 0
        d[at + 20 : at + 20 + old] = opts
        d[at + 12] = (((20 + len(opts)) // 4) << 4) | (d[at + 12] & 0x0F)
        _grow_ip(p, len(opts) - old)
    return _written(rng, p)


def _grow_ip(p: _Packet, delta: int) -> None:
    """The IP length field follows a header (or transport header) that grew by `delta` bytes."""
    d, at = p.data, p.layers.l3
    if at is None:
        return
    where = at + 2 if p.layers.version == 4 else at + 4
    if len(d) >= where + 2:
        d[where : where + 2] = struct.pack("!H", (int.from_bytes(d[where : where + 2], "big") + delta) & 0xFFFF)


def udp(rng: random.Random, data: bytes, corpus: Corpus) -> bytes | None:
    found = _a_header(rng, data, lambda lay: lay.l4, 8, lambda lay: lay.proto == 17)
    if found is None:
        return None
    p, d, at = found
    field_at = rng.choice((0, 2, 4, 4))
    d[at + field_at : at + field_at + 2] = struct.pack("!H", pick(rng, INT16 + (len(d) - at, len(d) - at + 1)))
    return _written(rng, p)


ICMP4_TYPES = (0, 3, 4, 5, 8, 11, 12, 13, 14, 17, 18, 255)
ICMP6_TYPES = (1, 2, 3, 4, 128, 129, 133, 135, 136, 255)


def icmp(rng: random.Random, data: bytes, corpus: Corpus) -> bytes | None:
    """ICMP and ICMPv6: type and code, and the header an error quotes (its version, length, protocol, ports; a
    quote cut short); or a TCP packet turned into an error quoting itself, so that quoted headers are met."""
    p = _a_packet(rng, data, lambda lay: lay.proto in (1, 58, 6) and lay.l4 is not None)
    if p is None:
        return None
    d, lay = p.data, p.layers
    v6 = lay.version == 6
    if lay.proto == 6:  # quote this TCP packet from an ICMP error
        quoted = bytes(d[lay.l3 :][: rng.choice((20, 28, 40, 48, 60, 1000))])
        icmp_type = rng.choice((1, 3) if v6 else (3, 11, 12, 4, 5))
        body = struct.pack("!BBHI", icmp_type, rng.choice((0, 1, 3, 4, 9, 13)), 0, 0) + quoted
        head = bytearray(d[lay.l3 : lay.l4])
        if v6:
            head[6] = 58
            head[4:6] = struct.pack("!H", (len(head) - 40 + len(body)) & 0xFFFF) if len(head) >= 40 else head[4:6]
        else:
            head[9] = 1
            head[2:4] = struct.pack("!H", (len(head) + len(body)) & 0xFFFF)
        d[lay.l3 :] = bytes(head) + body
        return _written(rng, p)
    at = lay.l4
    if len(d) < at + 8:
        return None
    which = rng.randrange(3) if lay.quoted is not None else 0
    if which == 0:
        d[at] = rng.choice(ICMP6_TYPES if lay.proto == 58 else ICMP4_TYPES)
        d[at + 1] = _u(rng, 8)
    elif which == 1:  # the quoted IP header: version / length, lengths, protocol
        q = lay.quoted
        field_at, value = rng.choice(((0, rng.choice((0x45, 0x4F, 0x44, 0x60, 0x00, 0xFF))), (9, rng.choice(IP_PROTOS)),
                                      (6, rng.choice(IP_PROTOS + (44,))), (2, rng.choice((0, 0xFF))), (6, 0x3F)))
        if q + field_at < len(d):
            d[q + field_at] = value
    else:  # the quote cut short
        del d[rng.randrange(lay.quoted, len(d) + 1):]
        _grow_ip(p, 0)
    return _written(rng, p)


def to_pcapng(rng: random.Random, data: bytes, corpus: Corpus) -> bytes | None:
    """A classic pcap rewritten as pcapng: its packets spread over one to three interfaces of any if_tsresol and
    if_tsoffset, their timestamps in those units (rounded), either byte order."""
    cap = formats.parse(data)
    if not isinstance(cap, Pcap):
        return None
    e = rng.choice("<>")
    nano = formats.PCAP_MAGICS.get(struct.unpack_from(cap.endian + "I", cap.header)[0], False)
    link = cap.linktype & 0xFFFF
    ifaces = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        binary, exp = rng.random() < 0.3, rng.choice((6, 9, 9, 3, 0, 12, 19, 29, 64, 100, 127))
        offset = rng.choice((0, 0, 0, 3600, -1_700_000_000, rng.choice(INT64)))
        ifaces.append((binary, exp, offset))
    blocks = [Block(SHB, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1), e)]
    for binary, exp, offset in ifaces:
        opts = [(9, bytes([binary << 7 | exp]))] + ([(14, struct.pack(e + "q", offset))] if offset else [])
        blocks.append(Block(IDB, struct.pack(e + "HHI", link, 0, 65535) + formats.write_options(opts, e), e))
    for r in cap.records:
        k = rng.randrange(len(ifaces))
        binary, exp, offset = ifaces[k]
        ns = (r.sec - offset) * 10**9 + (r.frac if nano else r.frac * 1000)
        units = (ns * (2**exp if binary else 10**exp) // 10**9) % (1 << 64)
        body = struct.pack(e + "IIIII", k, units >> 32, units & 0xFFFFFFFF, len(r.data), r.wirelen & 0xFFFFFFFF)
        blocks.append(Block(EPB, body + r.data + bytes(-len(r.data) % 4), e))
    return Pcapng(blocks).bytes()


ICMP_TO_V6 = {3: 1, 11: 3, 12: 4, 0: 129, 8: 128, 4: 2}


def to_ipv6(rng: random.Random, data: bytes, corpus: Corpus) -> bytes | None:
    """Every IPv4 packet (and the header an ICMP error quotes) rewritten as IPv6, ICMP as ICMPv6: IPv6 and
    ICMPv6 paths met with the seeds' TCP, UDP and ICMP exchanges."""
    cap = formats.parse(data)
    if cap is None:
        return None
    changed = False
    for index, link in cap.packets():
        raw = cap.packet(index)
        lay = formats.layers(raw, link)
        if lay.version != 4 or lay.l4 is None:
            continue
        six = _as_ipv6(raw[lay.l3 :])
        if six is None:
            continue
        head = bytearray(raw[: lay.l3])
        if lay.ethertype_at is not None:
            head[lay.ethertype_at : lay.ethertype_at + 2] = b"\x86\xdd"
        elif link == 0 and len(head) == 4:
            head[:] = struct.pack("<I", 10)
        elif link == 108 and len(head) == 4:
            head[:] = struct.pack("!I", 24)
        cap.set_packet(index, bytes(head) + six)
        changed = True
    return cap.bytes() if changed else None


def _as_ipv6(ip: bytes) -> bytes | None:
    """An IPv4 datagram as IPv6: addresses in 2001:db8::/96, hop limit the TTL, the transport as it is (ICMP
    made ICMPv6, its quoted datagram converted too)."""
    ihl = (ip[0] & 15) * 4
    if ihl < 20 or len(ip) < ihl:
        return None
    proto, payload = ip[9], bytearray(ip[ihl : max(int.from_bytes(ip[2:4], "big"), ihl)])
    if proto == 1 and len(payload) >= 8:
        proto = 58
        payload[0] = ICMP_TO_V6.get(payload[0], payload[0])
        if payload[0] in (1, 2, 3, 4) and len(payload) > 8:
            quoted = _as_ipv6(bytes(payload[8:]))
            payload[8:] = quoted if quoted is not None else payload[8:]
    prefix = bytes.fromhex("20010db8") + bytes(8)
    return (struct.pack("!IHBB", 6 << 28, len(payload), proto, ip[8]) + prefix + ip[12:16] + prefix + ip[16:20]
            + bytes(payload))


# ---------------------------------------------------------------------------------------------- generic

def bitflip(rng: random.Random, data: bytes, corpus: Corpus) -> bytes | None:
    if not data:
        return None
    d = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 4, 8, 32))):
        d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
    return bytes(d)


def interesting(rng: random.Random, data: bytes, corpus: Corpus) -> bytes | None:
    """An awkward 8-, 16- or 32-bit value, either byte order, at a random place."""
    size = rng.choice((1, 2, 4))
    if len(data) < size:
        return None
    value = {1: INT8, 2: INT16, 4: INT32}[size]
    at = rng.randrange(len(data) - size + 1)
    d = bytearray(data)
    d[at : at + size] = rng.choice(value).to_bytes(size, rng.choice(("big", "little")))
    return bytes(d)


def truncate(rng: random.Random, data: bytes, corpus: Corpus) -> bytes | None:
    if not data:
        return None
    return data[: rng.choice((rng.randrange(len(data)), rng.randrange(min(len(data), 64)), len(data) - 1))]


def chunk(rng: random.Random, data: bytes, corpus: Corpus) -> bytes | None:
    """A run of bytes deleted, repeated, or zeroed."""
    if len(data) < 2:
        return None
    a = rng.randrange(len(data))
    b = min(len(data), a + rng.choice((1, 4, 16, 100, 1000)))
    which = rng.randrange(3)
    if which == 0:
        return data[:a] + data[b:]
    if which == 1:
        return data[:b] + data[a:b] * rng.choice((1, 2, 10)) + data[b:]
    return data[:a] + bytes(b - a) + data[b:]


def splice(rng: random.Random, data: bytes, corpus: Corpus) -> bytes | None:
    """This capture's start and another's end (at record or block boundaries when both parse, else anywhere)."""
    other = rng.choice(corpus)[1]
    a, b = formats.parse(data), formats.parse(other)
    if isinstance(a, Pcap) and isinstance(b, Pcap) and rng.random() < 0.7:
        cut = rng.randrange(len(a.records) + 1)
        a.records = a.records[:cut] + b.records[rng.randrange(len(b.records) + 1):]
        return a.bytes()
    if isinstance(a, Pcapng) and isinstance(b, Pcapng) and rng.random() < 0.7:
        cut = rng.randrange(1, len(a.blocks) + 1) if a.blocks else 0
        a.blocks = a.blocks[:cut] + b.blocks[rng.randrange(len(b.blocks) + 1):]
        return a.bytes()
    return data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1):]


def compress(rng: random.Random, data: bytes, corpus: Corpus) -> bytes | None:
    """gzip: whole, cut short, in several members, damaged, or with trailing bytes."""
    z = gzip.compress(data, compresslevel=rng.choice((1, 6, 9)), mtime=0)
    which = rng.randrange(5)
    if which == 1:
        return z[: rng.randrange(len(z))]
    if which == 2:
        k = rng.randrange(len(data) + 1)
        return gzip.compress(data[:k], mtime=0) + gzip.compress(data[k:], mtime=0)
    if which == 3:
        d = bytearray(z)
        d[rng.randrange(10, len(d))] ^= 0xFF
        return bytes(d)
    if which == 4:
        return z + rng.choice((bytes(8), b"\x1f\x8b", b"junk", z))
    return z


def raw_deflate_bomb(rng: random.Random, data: bytes, corpus: Corpus) -> bytes | None:
    """The capture followed by many megabytes of one byte, gzip'd: it inflates hundreds of times."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    filler = bytes([rng.choice((0, 0xFF, 0x41))]) * (1 << 20)
    parts = [c.compress(data)] + [c.compress(filler) for _ in range(rng.choice((2, 8, 80)))]
    return b"".join(parts) + c.flush()


# ---------------------------------------------------------------------------------------------- registry

# name → (mutator, weight): how often each is picked.
MUTATORS: dict[str, tuple[Mutator, float]] = {
    "pcap_header": (pcap_header, 3), "pcap_record": (pcap_record, 3), "pcapng_block": (pcapng_block, 3),
    "pcapng_option": (pcapng_option, 4), "pcapng_interfaces": (pcapng_interfaces, 0.5),
    "link_layer": (link_layer, 3), "relink": (relink, 2), "ipv4": (ipv4, 4), "ipv6": (ipv6, 3), "tcp": (tcp, 5),
    "udp": (udp, 2), "icmp": (icmp, 3),
    "bitflip": (bitflip, 4), "interesting": (interesting, 3), "truncate": (truncate, 2), "chunk": (chunk, 2),
    "splice": (splice, 2), "gzip": (compress, 1), "gzip_bomb": (raw_deflate_bomb, 0.1),
    "to_pcapng": (to_pcapng, 2), "to_ipv6": (to_ipv6, 2),
}
_NAMES = list(MUTATORS)
_WEIGHTS = [MUTATORS[n][1] for n in _NAMES]


def mutate(rng: random.Random, corpus: Corpus, count: int) -> tuple[str, bytes, list[str]]:
    """A case: `count` mutators picked by weight, the first applied to a seed it applies to (a few seeds tried),
    the others in turn (one that does not apply is replaced by another pick; a gzip'd capture takes only the
    byte-level ones). Returns the seed's name, the bytes, and the mutators applied."""
    names = rng.choices(_NAMES, _WEIGHTS, k=count)
    for _ in range(20):
        seed, data = rng.choice(corpus)
        out = MUTATORS[names[0]][0](rng, data, corpus)
        if out is not None:
            break
    else:
        names[0], out = "bitflip", bitflip(rng, data, corpus) or b"\0"
    data, applied = out, names[:1]
    for name in names[1:]:
        for _ in range(10):
            if data[:2] == b"\x1f\x8b" and name not in BYTE_LEVEL:
                name = rng.choice(BYTE_LEVEL)
            out = MUTATORS[name][0](rng, data, corpus)
            if out is not None:
                break
            name = rng.choices(_NAMES, _WEIGHTS)[0]
        else:
            name, out = "bitflip", bitflip(rng, data, corpus) or b"\0"
        data = out
        applied.append(name)
    return seed, data, applied


BYTE_LEVEL = ("bitflip", "truncate", "chunk", "interesting")
