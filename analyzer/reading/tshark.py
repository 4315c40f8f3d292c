"""The second engine: the packets table (reading/schema.py) from Wireshark's dissectors, through pyshark.

Optional (``pip install 'synlens[tshark]'``, plus Wireshark's ``tshark``) and slow (half a second to start
tshark, then about a thousand frames a second), so it is never on the default path: ``synlens …
--engine tshark`` reaches it. It exists to read encapsulations the native reader does not decode, and as
an independent check of that reader (tests/test_engine_tshark.py compares the two, and lists where and
why they differ).

How the columns are found. tshark is run with ``-T json --no-duplicate-keys`` (pyshark's ``use_json``): one
dict of layers per frame, nested as in Wireshark's tree (the header an ICMP error quotes sits *inside* the
``icmp`` layer; IPv6 extension headers inside ``ipv6``), with repeated keys merged into lists. The frame's
``frame.protocols`` ("eth:ethertype:vlan:ethertype:ip:tcp") gives the order of the top-level layers, so the
outermost network layer and the transport layer right after it are told apart from tunnelled ones.

- frame, ts_ns, caplen, wirelen: ``frame.number``, ``frame.time_epoch`` (parsed as a decimal string, so
  nanoseconds are exact), ``frame.cap_len``, ``frame.len``.
- iface, linktype: Wireshark reports an encapsulation (``frame.encap_type``), not the pcap link type, and
  several link types share one encapsulation (101, 12 and 14 are all "raw IP"); and it numbers pcapng
  interfaces per section. So the file's own headers are read here: the 24-byte pcap header, or the pcapng
  section and interface description blocks. A pcapng interface id is made unique across sections (the
  interfaces of the sections before it are counted), as the native reader does.
- eth_src/eth_dst: ``eth.src``/``eth.dst`` of a frame whose first layer is Ethernet; SLL/SLL2:
  ``sll.src.eth`` when ``sll.halen`` is 6. vlan: the id of the outermost ``vlan``/``ieee8021ad`` tag.
  ethertype: the last tag's type, else ``eth.type`` (``sll.etype``/``ltype``/``gretype`` for cooked
  captures); for link layers without one (raw IP, BSD loopback, 802.3 with LLC/SNAP, PPP, and whatever else
  Wireshark decodes) the type of the network layer Wireshark found (IPv4 0x0800, IPv6 0x86DD, ARP 0x0806).
- ip_version, src, dst, ttl, ip_id, ip_len, ip_proto, fragment: the first ``ip``/``ipv6`` layer, taken only
  when Wireshark decoded its addresses (a header with a bogus length or cut short is not an IP packet, as
  in the native reader). IPv6: the extension-header chain (hop-by-hop, routing, destination options,
  fragment, AH, mobility, HIP, shim6) is followed through each header's next-header field; ``ip_proto`` is
  the last one, ``ip_id`` the fragment header's identification. ARP (IPv4 over Ethernet only): ``arp.opcode``
  and the protocol addresses.
- sport … payload_len: the ``tcp``/``udp`` layer right after the network layer, in a packet that is not a
  later fragment (fragments are not reassembled: ``ip.defragment`` and ``ipv6.defragment`` are off).
  seq/ack are raw (sequence analysis is off; ``tcp.seq_raw`` when present). tcp_options: the option kinds
  Wireshark dissected, in wire order (see `_tcp_options`). payload_len: what the IP length leaves after the
  TCP header (``tcp.hdr_len``) or the UDP header (whose length field can lie); Wireshark's ``tcp.len`` is the
  same number, but it leaves it out for a first fragment.
- icmp_*: ``icmp.*`` / ``icmpv6.*``; id and seq for echo, timestamp, information and address-mask messages.
- q_*: the ``ip``/``ipv6`` and ``tcp``/``udp`` layers nested in an ICMP / ICMPv6 error.

Addresses are normalised through `ipaddress` (Wireshark and Python spell some IPv6 addresses differently)
and share one category list across src, dst, q_src and q_dst, ordered as the native reader orders it (IPv4
by value, then IPv6 by value), so the two engines' categoricals are identical.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gzip
import ipaddress
import os
import struct
import warnings
import zlib

import numpy as np
import pandas as pd

from ..errors import CaptureError, CaptureWarning, capture_file_errors
from ..protocols import ETH_ARP, ETH_IPV4, ETH_IPV6, ICMP4_ERRORS, ICMP4_QUERIES, ICMP6_ERRORS, ICMP6_QUERIES
from .schema import PACKET_COLUMNS, PACKET_DTYPES, column, empty_packets, frame_from_columns

INSTALL_HINT = "pip install 'synlens[tshark]' (or: pip install pyshark)"

# Wireshark preferences: no reassembly (one row per frame, headers as they are on the wire), no TCP
# sequence analysis (raw sequence numbers, and much faster).
PREFS = {
    "ip.defragment": "FALSE",
    "ipv6.defragment": "FALSE",
    "tcp.desegment_tcp_streams": "FALSE",
    "tcp.analyze_sequence_numbers": "FALSE",
    "tcp.relative_sequence_numbers": "FALSE",
    "tcp.calculate_timestamps": "FALSE",
    "ip.tso_support": "FALSE",  # an IP length of 0 is what the header says, not "whatever was captured"
}

# Wireshark encapsulation (frame.encap_type) → pcap link type, for capture formats other than pcap and
# pcapng, whose own headers give the link type exactly (WTAP 7, raw IP, is also link types 12 and 14).
# Others become 0xFFFF.
WTAP_TO_LINKTYPE = {1: 1, 4: 9, 7: 101, 15: 0, 20: 105, 25: 113, 129: 228, 130: 229, 174: 108, 210: 276}
NO_LINKTYPE = 0xFFFF

NETWORK_ETHERTYPE = {"ip": ETH_IPV4, "ipv6": ETH_IPV6, "arp": ETH_ARP}
VLAN_LAYERS = {"vlan": ("vlan.id", "vlan.etype"), "ieee8021ad": ("ieee8021ad.id", "ieee8021ah.etype")}

# IPv6 extension headers, by next-header value: (protocol name, next-header field, length field or None
# for the fixed 8 bytes of a fragment header). Wireshark nests them in the ipv6 layer (unless its
# ipv6.exthdr_under_root_protocol_tree preference says otherwise: both places are looked in). AH's length
# counts 4-byte words minus 2; the others' *.len_oct / hlen fields are in bytes.
IPV6_EXT = {
    0: ("ipv6.hopopts", "ipv6.hopopts.nxt", "ipv6.hopopts.len_oct"),
    43: ("ipv6.routing", "ipv6.routing.nxt", "ipv6.routing.len_oct"),
    60: ("ipv6.dstopts", "ipv6.dstopts.nxt", "ipv6.dstopts.len_oct"),
    44: ("ipv6.fraghdr", "ipv6.fraghdr.nxt", None),
    51: ("ah", "ah.next_header", "ah.length"),
    135: ("mipv6", "mip6.proto", "mip6.hlen"),
    139: ("hip", "hip.proto", "hip.hdr_len"),
    140: ("shim6", "shim6.nxt", "shim6.len_oct"),
}
MAX_EXT = 8  # as the native reader: a longer chain is an evasion attempt, not a probe

# TCP option values: (column, Wireshark field, the option's standard length; other lengths are bogus)
OPTION_VALUES = (("mss", "tcp.options.mss_val", 4), ("wscale", "tcp.options.wscale.shift", 3),
                 ("tsval", "tcp.options.timestamp.tsval", 10), ("tsecr", "tcp.options.timestamp.tsecr", 10))

_ADDRESS = ("src", "dst", "q_src", "q_dst")  # one category list for the four
_NULLABLE = tuple(c.name for c in PACKET_COLUMNS if c.dtype.startswith("UInt"))


def read_tshark(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a capture file into the packets table through Wireshark's dissectors (pyshark + tshark).

    Same table as `analyzer.read`. Raises `CaptureError` when the file cannot be read or pyshark / tshark
    are missing; warns `CaptureWarning` and returns the frames before the damage when tshark stops early.
    ``attrs``: path, format, compressed, engine.
    """
    path = os.fspath(path)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _read(path)
    # An event loop runs in this thread (Jupyter): pyshark drives its own, so it gets a thread of its own.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(_read_in_thread, path).result()


def _read_in_thread(path: str) -> pd.DataFrame:
    try:
        return _read(path)
    finally:  # pyshark made this thread an event loop; it is the thread's only user
        loop = asyncio.get_event_loop_policy().get_event_loop()
        asyncio.set_event_loop(None)
        loop.close()


def _read(path: str) -> pd.DataFrame:
    try:
        import pyshark
        from pyshark.capture.capture import TSharkCrashException
        from pyshark.tshark.tshark import TSharkNotFoundException
    except ImportError:
        raise CaptureError(path, f"the tshark engine needs pyshark: {INSTALL_HINT}") from None
    container = _Container.read(path)
    rows = _Rows()
    failure = capture = packets = None
    try:
        capture = pyshark.FileCapture(path, keep_packets=False, use_json=True, include_raw=False,
                                      override_prefs=PREFS)
        _reuse_version(capture)
        packets = iter(capture)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except (KeyError, ValueError) as e:  # pyshark cannot parse tshark's output for this frame
                failure = (f"pyshark cannot read frame {rows.n + 1} of tshark's output "
                           f"({type(e).__name__}: {e})")
                break
            rows.add(_layers(packet), container)
    except TSharkNotFoundException:
        raise CaptureError(path, "the tshark engine needs Wireshark's tshark on PATH (Debian: apt-get "
                           f"install tshark) and pyshark ({INSTALL_HINT})") from None
    except (FileNotFoundError, PermissionError) as e:  # pyshark's own checks, after ours: a race
        raise CaptureError(path, str(e)) from None
    except TSharkCrashException as e:  # tshark exited with an error; the packets before it were yielded
        failure = _tshark_problem(str(e), path)
    finally:
        if packets is not None:
            try:
                packets.close()  # stops tshark if it is still writing (an early break)
            except TSharkCrashException as e:
                failure = failure or _tshark_problem(str(e), path)
        if capture is not None:
            closing = _close(capture, path)
            failure = failure or closing
    if failure is not None:
        if "-o flag" in failure:  # this tshark does not know a preference in PREFS: not the file's fault
            raise CaptureError(path, f"tshark rejects synlens's settings ({failure})")
        if rows.n == 0 and not container.intact:
            raise CaptureError(path, failure)
        warnings.warn(CaptureWarning(path, f"{failure}; read {rows.n} frames"), stacklevel=3)
    frame = rows.frame()
    frame.attrs.update(path=path, format=container.format, compressed=container.compressed, engine="tshark")
    return frame


_VERSIONS: dict[str, object] = {}


def _reuse_version(capture) -> None:
    """Spare tshark's ``-v`` run (~0.4 s) on every read: pyshark asks for the version once per capture."""
    from pyshark.tshark.tshark import get_process_path, get_tshark_version

    exe = get_process_path(capture.tshark_path)
    if exe not in _VERSIONS:
        _VERSIONS[exe] = get_tshark_version(capture.tshark_path)
    capture._Capture__tshark_version = _VERSIONS[exe]


def _close(capture, path: str) -> str | None:
    """Close a pyshark capture; tshark's complaint if it stopped with an error.

    pyshark raises for a tshark that exited with an error on every close, including the one in ``__del__``
    (it keeps the exited process in its set): the process is gone, so it is forgotten after the first.
    Whether the error is seen depends on a race (pyshark kills tshark at the end of its output), so tshark's
    last line on stderr is checked as well.
    """
    from pyshark.capture.capture import TSharkCrashException

    problem = None
    try:
        capture.close()
    except TSharkCrashException as e:
        problem = _tshark_problem(str(e), path)
        capture._running_processes.clear()
        capture.close()  # now only waits for pyshark's stderr reader
    last = (capture._last_error_line or "").strip()
    if problem is None and last.startswith(("tshark:", "(")):  # "(pcap: …)" details tshark's last error
        problem = _tshark_problem(f"Last error line: {last}", path)
    return problem


def _tshark_problem(message: str, path: str) -> str:
    """tshark's complaint, from pyshark's exception text, without the file name or pyshark's advice."""
    line = message.split("Last error line:", 1)[-1].split("\n", 1)[0].strip()
    line = line.removeprefix("tshark:").strip()
    line = line.replace(f'The file "{path}" ', "").strip("() .")
    return line or "tshark stopped with an error"


def _layers(packet) -> tuple[dict, list[str], dict[str, list[dict]]]:
    """(frame fields, protocol names in order, top-level layer dicts by name) of one pyshark JSON packet.

    pyshark's JsonLayer keeps the layer's JSON object as ``_all_fields``; repeated layers (two ``ip`` in a
    tunnel) are one JsonLayer with the others in ``duplicate_layers``.
    """
    frame = packet.frame_info._all_fields
    layers: dict[str, list[dict]] = {}
    for layer in packet.layers:
        layers[layer._layer_name] = [layer._all_fields] + [d._all_fields for d in layer.duplicate_layers]
    return frame, frame.get("frame.protocols", "").split(":"), layers


# ---------------------------------------------------------------------------------------------- container


class _Container:
    """What the file's own headers say: format, and each pcapng section's interface link types."""

    def __init__(self, fmt: str, compressed: bool, sections: list[list[int]], intact: bool) -> None:
        self.format = fmt
        self.compressed = compressed
        self.sections = sections  # per section, per interface: link type (pcap: one section, one interface)
        self.intact = intact  # the container header is whole: damage after it is a warning, not an error
        self.first_iface = [sum(len(s) for s in sections[:i]) for i in range(len(sections))]

    @classmethod
    def read(cls, path: str) -> _Container:
        """Read the headers only: pcap's first 24 bytes, or pcapng's block headers (skipping the packets)."""
        with capture_file_errors(path), open(path, "rb") as raw:
            compressed = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            if raw.read(1) == b"":
                raise CaptureError(path, "empty file (0 bytes), not a capture")
            raw.seek(0)
            f = gzip.GzipFile(fileobj=raw) if compressed else raw
            try:
                return cls._headers(f, compressed)
            except (OSError, EOFError, zlib.error):  # damaged gzip: tshark will say what it makes of it
                return cls("other", compressed, [], False)

    @classmethod
    def _headers(cls, f, compressed: bool) -> _Container:
        head = f.read(24)
        if head[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            if len(head) < 24:
                return cls("pcap", compressed, [[NO_LINKTYPE]], False)
            endian = "<" if head[0] in (0xD4, 0x4D) else ">"
            network = struct.unpack_from(endian + "I", head, 20)[0]
            # The link type is the low 16 bits; the top bits may say whether the frames carry an FCS.
            return cls("pcap", compressed, [[network & 0xFFFF]], True)
        if head[:4] != b"\x0a\x0d\x0d\x0a" or len(head) < 12:
            return cls("other", compressed, [], False)
        sections: list[list[int]] = []
        endian, block = "<", head
        while len(block) >= 12:
            if block[:4] == b"\x0a\x0d\x0d\x0a":
                bom = block[8:12]
                if bom not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
                    break
                endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
                sections.append([])
            btype, blen = struct.unpack_from(endian + "II", block)
            if blen < 12 or blen % 4:
                break
            if btype == 1 and sections:  # interface description: link type in its first 2 bytes
                if len(block) < 10:
                    block += f.read(10 - len(block))
                if len(block) < 10:
                    break
                sections[-1].append(struct.unpack_from(endian + "H", block, 8)[0])
            rest = blen - len(block)
            if rest < 0:
                block = block[blen:]
                continue
            try:
                f.seek(rest, os.SEEK_CUR)  # skip the body (packets): a plain seek, or gzip reading ahead
                block = f.read(12)
            except (OSError, EOFError, zlib.error):  # a gzip stream cut short or damaged: headers so far
                break
        return cls("pcapng", compressed, sections or [[]], any(sections))

    def link(self, frame: dict) -> tuple[int, int]:
        """(iface, linktype) of a frame."""
        local = int(frame.get("frame.interface_id", 0))
        section = int(frame.get("frame.section_number", 1)) - 1
        if 0 <= section < len(self.sections) and local < len(self.sections[section]):
            return self.first_iface[section] + local, self.sections[section][local]
        return local, WTAP_TO_LINKTYPE.get(int(frame.get("frame.encap_type", -1)), NO_LINKTYPE)


# ---------------------------------------------------------------------------------------------- fields


def _one(value):
    """The first of a field that Wireshark may repeat (merged into a list by --no-duplicate-keys)."""
    return value[0] if isinstance(value, list) else value


def _int(d: dict, key: str) -> int | None:
    value = d.get(key)
    if value is None:
        return None
    return int(_one(value), 0)  # decimal, or 0x… for hex-displayed fields


def _all(d: dict, key: str) -> list:
    value = d.get(key)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _mac(text: str | None) -> int | None:
    return None if text is None else int(_one(text).replace(":", ""), 16)


def _epoch_ns(text: str) -> int:
    """frame.time_epoch ("1700000000.000250123") → integer ns, exactly."""
    negative = text.startswith("-")
    sec, _, frac = text.lstrip("-").partition(".")
    ns = int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])
    return -ns if negative else ns


def _ipv6_chain(ipv6: dict, outside: dict) -> tuple[int, int, int, bool, int | None, bool]:
    """Follow an IPv6 header's extension headers through their next-header fields.

    Extension headers Wireshark nests in the ipv6 layer are looked up there, the others (AH, mobility …)
    in `outside` (name → list of dicts, in wire order). Returns (protocol after the chain, the chain's
    length in bytes, number of headers, whether a transport header follows, fragment identification,
    whether the packet is a fragment). A header Wireshark could not read (cut short) ends the chain with
    its own type as the protocol, and no transport header.
    """
    nh = _int(ipv6, "ipv6.nxt")
    size, count, l4, frag_id, fragmented = 0, 0, True, None, False
    seen: dict[str, int] = {}
    while nh in IPV6_EXT and count < MAX_EXT:
        name, nxt_key, len_key = IPV6_EXT[nh]
        k = seen.get(name, 0)
        seen[name] = k + 1
        found = _all(ipv6, name) or _all(outside, name)
        hdr = found[k] if k < len(found) and isinstance(found[k], dict) else {}
        nxt = _int(hdr, nxt_key)
        if name == "ipv6.fraghdr":
            length = 8
            offset, more = _int(hdr, "ipv6.fraghdr.offset"), _int(hdr, "ipv6.fraghdr.more")
            if "ipv6.fraghdr.ident" in hdr:
                frag_id = _int(hdr, "ipv6.fraghdr.ident")
            fragmented |= bool(offset) or bool(more)
            l4 &= not offset
        else:
            length = _int(hdr, len_key)
            if length is not None and name == "ah":
                length = (length + 2) * 4
        if nxt is None or length is None:
            return nh, size, count, False, frag_id, fragmented
        nh, size, count = nxt, size + length, count + 1
    return nh, size, count, l4 and nh not in IPV6_EXT, frag_id, fragmented


def _tcp_options(tcp: dict) -> tuple[int | None, dict[str, int]]:
    """The option kinds Wireshark dissected, in wire order and packed as the schema says, and the values.

    Each option Wireshark dissects is an item of ``tcp.options_tree`` holding ``tcp.option_kind`` (and
    ``tcp.option_len``), but ``--no-duplicate-keys`` merges repeated options (two NOPs) under one key, which
    loses their order relative to the others. ``tcp.options`` holds the option bytes in wire order, so the
    items are put back in order by walking it: at each offset, the first unused item of the kind found
    there is the option, and its length says where the next one starts. The walk stops at the end of the
    option list (EOL: what follows is padding), and at bytes Wireshark did not dissect as an option.
    Values: those of the last MSS / window scale / timestamp option of the standard length.
    """
    tree = tcp.get("tcp.options_tree")
    if not isinstance(tree, dict):
        return None, {}
    items: list[tuple[int, int]] = []  # (kind, length) in Wireshark's key order
    values: dict[str, int] = {}
    for value in tree.values():
        for sub in value if isinstance(value, list) else [value]:
            if not isinstance(sub, dict) or "tcp.option_kind" not in sub:
                continue
            kind, length = _int(sub, "tcp.option_kind"), _int(sub, "tcp.option_len")
            items.append((kind, 1 if kind in (0, 1) else length or 0))
            for name, field, size in OPTION_VALUES:
                if field in sub and length == size:
                    values[name] = _int(sub, field)
    wire = bytes.fromhex(_one(tcp.get("tcp.options", "")).replace(":", ""))
    kinds: list[int] = []
    pos, used = 0, [False] * len(items)
    while pos < len(wire):
        j = next((j for j, (kind, _) in enumerate(items) if not used[j] and kind == wire[pos]), None)
        if j is None:
            break
        used[j] = True
        kind, length = items[j]
        kinds.append(kind)
        if kind == 0 or length < 1:
            break
        pos += length
    if not kinds:
        return None, values
    packed = 0
    for kind in kinds[:8]:
        packed = (packed << 8) | kind
    return packed << (8 * (8 - min(len(kinds), 8))), values


# ---------------------------------------------------------------------------------------------- rows


class _Rows:
    """Column lists, one entry per frame (None = absent), turned into the schema's arrays at the end."""

    def __init__(self) -> None:
        self.n = 0
        self.cols: dict[str, list] = {c.name: [] for c in PACKET_COLUMNS}

    def add(self, parsed: tuple[dict, list[str], dict[str, list[dict]]], container: _Container) -> None:
        frame, protocols, layers = parsed
        row: dict[str, object] = {}
        row["frame"] = int(frame["frame.number"])
        row["ts_ns"] = _epoch_ns(frame["frame.time_epoch"])
        row["iface"], row["linktype"] = container.link(frame)
        row["caplen"] = int(frame["frame.cap_len"])
        row["wirelen"] = int(frame["frame.len"])
        row["ip_version"] = 0
        row["fragment"] = False
        _link(row, protocols, layers)
        _network(row, protocols, layers)
        for name, values in self.cols.items():
            values.append(row.get(name))
        self.n += 1

    def frame(self) -> pd.DataFrame:
        if self.n == 0:
            return empty_packets()
        cols: dict[str, object] = {}
        for name in ("frame", "ts_ns"):
            cols[name] = np.array(self.cols[name], np.int64)
        for name in ("iface", "linktype"):
            cols[name] = np.array(self.cols[name], np.uint16)
        for name in ("caplen", "wirelen"):
            cols[name] = np.array(self.cols[name], np.uint32)
        cols["ip_version"] = np.array(self.cols["ip_version"], np.uint8)
        cols["fragment"] = np.array(self.cols["fragment"], bool)
        for name in _NULLABLE:
            values = self.cols[name]
            present = np.array([v is not None for v in values], bool)
            data = np.array([0 if v is None else v for v in values], np.uint64)
            cols[name] = column(PACKET_DTYPES[name], data, present)
        addresses = {a for name in _ADDRESS for a in self.cols[name] if a is not None}
        ordered = sorted(addresses, key=lambda a: (a.version, a.packed))
        index = {a: i for i, a in enumerate(ordered)}
        categories = pd.Index([str(a) for a in ordered], dtype=object)
        for name in _ADDRESS:
            codes = np.array([-1 if a is None else index[a] for a in self.cols[name]], np.int64)
            cols[name] = pd.Categorical.from_codes(codes, categories=categories)
        return frame_from_columns(cols)


def _address(text) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    return None if text is None else ipaddress.ip_address(_one(text))


def _link(row: dict, protocols: list[str], layers: dict[str, list[dict]]) -> None:
    """eth_src, eth_dst, vlan, ethertype from the link layer (when it has those) and its VLAN tags."""
    first = protocols[0] if protocols else ""
    if first == "eth" and layers.get("eth"):
        eth = layers["eth"][0]
        row["eth_dst"] = _mac(eth.get("eth.dst"))
        row["eth_src"] = _mac(eth.get("eth.src"))
        row["ethertype"] = _int(eth, "eth.type")  # absent for an 802.3 frame (a length, not a type)
    elif first == "sll" and layers.get("sll"):
        sll = layers["sll"][0]
        if _int(sll, "sll.halen") == 6:
            row["eth_src"] = _mac(sll.get("sll.src.eth") or sll.get("sll.src.other"))
        # The protocol field, named by what Wireshark makes of it (by the ARPHRD type and its value).
        for key in ("sll.etype", "sll.ltype", "sll.gretype"):
            if key in sll:
                row["ethertype"] = _int(sll, key)
                break
    else:
        return
    seen: dict[str, int] = {}
    i = 1
    while i < len(protocols) and protocols[i] in ("ethertype", *VLAN_LAYERS):
        name = protocols[i]
        i += 1
        if name == "ethertype":
            continue
        k = seen.get(name, 0)
        seen[name] = k + 1
        tags = layers.get(name, [])
        tag = tags[k] if k < len(tags) else {}
        id_key, type_key = VLAN_LAYERS[name]
        if row.get("vlan") is None:
            row["vlan"] = _int(tag, id_key)
        row["ethertype"] = _int(tag, type_key)


def _network(row: dict, protocols: list[str], layers: dict[str, list[dict]]) -> None:
    """Network and transport columns, from the outermost IPv4 / IPv6 / ARP layer and the layer after it."""
    i = next((i for i, name in enumerate(protocols) if name in NETWORK_ETHERTYPE), -1)
    if i < 0 or not layers.get(protocols[i]):
        return
    name = protocols[i]
    if row.get("ethertype") is None:  # raw IP, BSD loopback, LLC/SNAP, PPP …: the layer Wireshark found
        row["ethertype"] = NETWORK_ETHERTYPE[name]
    d = layers[name][0]
    if name == "arp":
        if (_int(d, "arp.hw.type"), _int(d, "arp.proto.type"), _int(d, "arp.hw.size"),
                _int(d, "arp.proto.size")) == (1, 0x0800, 6, 4) and "arp.dst.proto_ipv4" in d:
            row["arp_op"] = _int(d, "arp.opcode")
            row["src"] = _address(d.get("arp.src.proto_ipv4"))
            row["dst"] = _address(d.get("arp.dst.proto_ipv4"))
        return
    if name == "ip":
        if "ip.src" not in d or "ip.dst" not in d:
            return  # bogus or cut-short header: not a decodable IP packet
        row["ip_version"] = 4
        row["src"], row["dst"] = _address(d["ip.src"]), _address(d["ip.dst"])
        row["ttl"] = _int(d, "ip.ttl")
        row["ip_id"] = _int(d, "ip.id")
        row["ip_len"] = _int(d, "ip.len")
        proto = row["ip_proto"] = _int(d, "ip.proto")
        flags = d.get("ip.flags_tree", {})
        offset = _int(d, "ip.frag_offset") or 0
        row["fragment"] = bool(offset) or bool(_int(flags, "ip.flags.mf"))
        l4 = offset == 0
        segment = row["ip_len"] - _int(d, "ip.hdr_len")
        nxt = i + 1
    else:
        if "ipv6.src" not in d or "ipv6.dst" not in d:
            return
        row["ip_version"] = 6
        row["src"], row["dst"] = _address(d["ipv6.src"]), _address(d["ipv6.dst"])
        row["ttl"] = _int(d, "ipv6.hlim")
        plen = _int(d, "ipv6.plen")
        row["ip_len"] = plen + 40
        proto, ext_len, count, l4, frag_id, fragmented = _ipv6_chain(d, layers)
        row["ip_proto"] = proto
        row["ip_id"] = frag_id
        row["fragment"] = fragmented
        segment = plen - ext_len
        nxt = i + 1 + count  # frame.protocols lists each extension header
    if not l4 or segment < 0 or nxt >= len(protocols):
        return
    transport = protocols[nxt]
    expected = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}.get(proto)
    if transport != expected or not layers.get(transport):
        return
    t = layers[transport][0]
    if transport == "tcp":
        _tcp(row, t, segment)
    elif transport == "udp":
        row["sport"], row["dport"] = _int(t, "udp.srcport"), _int(t, "udp.dstport")
        length = _int(t, "udp.length")
        if length is not None and length >= 8 and segment >= 8:
            row["payload_len"] = segment - 8
    else:
        _icmp(row, t, v6=transport == "icmpv6")


def _tcp(row: dict, t: dict, segment: int | None = None) -> None:
    """TCP columns; `segment` is the TCP segment's length by the IP header (None: a quoted header)."""
    quoted = segment is None
    prefix = "q_" if quoted else ""
    row[prefix + "sport"] = _int(t, "tcp.srcport")
    row[prefix + "dport"] = _int(t, "tcp.dstport")
    seq = _int(t, "tcp.seq_raw")
    row[prefix + "seq"] = seq if seq is not None else _int(t, "tcp.seq")
    if quoted or "tcp.flags" not in t:
        return
    ack = _int(t, "tcp.ack_raw")
    row["ack"] = ack if ack is not None else _int(t, "tcp.ack")
    row["tcp_flags"] = _int(t, "tcp.flags") & 0x1FF
    row["window"] = _int(t, "tcp.window_size_value")
    hdr_len = _int(t, "tcp.hdr_len")
    # As in the native reader, a header longer than the segment is inconsistent: no payload, no options.
    # (The payload is the IP length's, not tcp.len, which Wireshark leaves out for a first fragment.)
    if hdr_len is None or hdr_len < 20 or segment < hdr_len:
        return
    row["payload_len"] = segment - hdr_len
    if hdr_len > 20:
        packed, values = _tcp_options(t)
        row["tcp_options"] = packed
        row.update(values)


def _icmp(row: dict, t: dict, v6: bool) -> None:
    """ICMP / ICMPv6 columns, and the q_* columns from the header an error message quotes."""
    p = "icmpv6." if v6 else "icmp."
    typ = row["icmp_type"] = _int(t, p + "type")
    row["icmp_code"] = _int(t, p + "code")
    if typ in (ICMP6_QUERIES if v6 else ICMP4_QUERIES):
        if v6:
            row["icmp_id"] = _int(t, "icmpv6.echo.identifier")
            row["icmp_seq"] = _int(t, "icmpv6.echo.sequence_number")
        else:
            row["icmp_id"], row["icmp_seq"] = _int(t, "icmp.ident"), _int(t, "icmp.seq")
    if typ not in (ICMP6_ERRORS if v6 else ICMP4_ERRORS):
        return
    inner_name = "ipv6" if v6 else "ip"
    inner = t.get(inner_name)
    inner = inner[0] if isinstance(inner, list) else inner
    if not isinstance(inner, dict) or f"{inner_name}.src" not in inner or f"{inner_name}.dst" not in inner:
        return
    row["q_src"], row["q_dst"] = _address(inner[f"{inner_name}.src"]), _address(inner[f"{inner_name}.dst"])
    if v6:
        proto, _, _, l4, _, _ = _ipv6_chain(inner, t)
    else:
        proto = _int(inner, "ip.proto")
        row["q_ip_id"] = _int(inner, "ip.id")
        l4 = not _int(inner, "ip.frag_offset")
    row["q_proto"] = proto
    name = {6: "tcp", 17: "udp"}.get(proto)
    quoted = t.get(name) if name and l4 else None
    quoted = quoted[0] if isinstance(quoted, list) else quoted
    if not isinstance(quoted, dict):
        return
    if name == "tcp":
        _tcp(row, quoted)
    else:
        row["q_sport"], row["q_dport"] = _int(quoted, "udp.srcport"), _int(quoted, "udp.dstport")
