"""Which tool sent a scan phase, from what its probes' headers give away. Each signature names its evidence.

===========  ======================================================================================
tool         signature of its probes (all must hold over the phase)
===========  ======================================================================================
unicornscan  IPv4 TCP; seq XOR target address XOR (dport << 16 | sport) is one key over >= 3 probes whose
             (address, ports) differ: its per-run syn cookie (TCPHASHTRACK); any flags, -W template, TTL
zmap         IPv4 ID 54321 on every probe; TTL 255
masscan      TTL 255; TCP window 1024 or 1025; SYN options none or MSS 1460 alone (its templates)
nmap         raw probes: TTL varies within 37–59 (nmap picks one at random per probe), or TCP window in
             {1024, 2048, 3072, 4096} with SYN options exactly MSS 1460 and one source port for the phase
qscan.nse    TTL 128, IPv4 ID 0x55d1 (21969) and window 3072 on every probe (its fixed template)
hping3       no TCP options, one window for the phase, source port rising by one per probe (its defaults)
===========  ======================================================================================

A connect() scan is sent by the scanner's kernel, so no tool signature survives: "unknown". unicornscan's
-msf is the exception: its own sender makes the SYNs (and the handshake), so its key still shows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .keys import categories_at, masked_parts, packet_rows

MSS_ONLY = 0x02 << 56  # packets.tcp_options: kinds left-aligned, first option in the top byte

# unicornscan 0.4.x (github.com/dneufeld/unicornscan; robertelee78/unicornscan's send_packet.c is the same):
# - src/scan_progs/send_packet.c, _send_packet(): every TCP probe's seq is TCPHASHTRACK(target s_addr, dport,
#   sport, syn_key); src/scan_progs/tcphash.h defines that as syn_key ^ (addr ^ ((dport << 16) + sport)), and
#   makepkt.c writes it with htonl. s_addr is the address in network byte order read as a host integer, so on
#   the usual little-endian sender the address enters byte-swapped.
# - src/scan_progs/scanopts.c, scan_setprivdefaults(): syn_key = prng_get32() once per run, so one key holds
#   over every TCP probe of a run, whatever -mT flags, -W fingerprint, -t TTL or -B source port.
# - src/scan_progs/packet_parse.c checks replies by the same hash (ack - 1); wolpertinger, a descendant,
#   copies TCPHASHTRACK too, so "unicornscan" here means its packet engine.
# Not used, as not distinctive: IP ID (prng_get32() per packet), source port (random in 4096-65534 per probe,
# send_packet.c), TTL/window/options (per -W template in init_packet.c; etc/unicorn.conf.in picks -W 1).
# UDP probes carry no key (random port and IP ID, payloads.conf payloads): no UDP signature.
UNICORNSCAN_MIN_PROBES = 3
# Its -W templates (src/scan_progs/init_packet.c) by SYN window; 6 and 7 scale with the MTU (1500 here).
UNICORNSCAN_TEMPLATES = {4128: "-W 0 (Cisco IOS)", 16384: "-W 1 (OpenBSD, unicorn.conf's default)",
                         32767: "-W 2 (Windows XP)", 12345: "-W 3 (p0f sendsyn)", 65535: "-W 4 (FreeBSD)",
                         3072: "-W 5 (nmap OS probe)", 5744: "-W 6 (Linux)", 11744: "-W 7 (strange TCP)"}


def _ipv4_int(addresses: pd.Series) -> np.ndarray | None:
    """IPv4 text addresses as big-endian integers (the order on the wire); None if any is not one."""
    parts = addresses.astype(str).str.split(".", expand=True)
    if parts.shape[1] != 4:
        return None
    octets = parts.apply(pd.to_numeric, errors="coerce").to_numpy(float)
    if np.isnan(octets).any() or (octets < 0).any() or (octets > 255).any():
        return None
    o = octets.astype(np.uint32)
    return (o[:, 0] << 24) | (o[:, 1] << 16) | (o[:, 2] << 8) | o[:, 3]


class _Probes:
    """The probe packets of a phase: rows of the packets table, each column taken when a signature first
    asks for it (most phases are told apart by a few columns, and a phase can hold a million probes), as
    numpy values and an absence mask."""

    def __init__(self, packets: pd.DataFrame, rows: np.ndarray) -> None:
        self.packets, self.rows = packets, rows
        self._taken: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._tcp: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def head(self, n: int) -> _Probes:
        """The first n probes."""
        return _Probes(self.packets, self.rows[:n])

    def column(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The probes' values of an integer column (anything where absent) and where they are absent."""
        if name not in self._taken:
            values, absent = masked_parts(self.packets[name])
            self._taken[name] = (values[self.rows],
                                 np.zeros(len(self.rows), bool) if absent is None else absent[self.rows])
        return self._taken[name]

    def tcp(self) -> np.ndarray:
        """Which probes are TCP."""
        if self._tcp is None:
            proto, absent = self.column("ip_proto")
            self._tcp = (proto == 6) & ~absent
        return self._tcp

    def present(self, name: str, tcp: bool = False) -> np.ndarray:
        """The column's values where it has one (of the TCP probes only, with `tcp`), as int64."""
        values, absent = self.column(name)
        keep = ~absent & self.tcp() if tcp else ~absent
        return (values if keep.all() else values[keep]).astype(np.int64)

    def filled(self, name: str, tcp: bool = False) -> np.ndarray:
        """The column's values, 0 where it has none (of the TCP probes only, with `tcp`), in its own type."""
        values, absent = self.column(name)
        if tcp and not self.tcp().all():
            values, absent = values[self.tcp()], absent[self.tcp()]
        return np.where(absent, values.dtype.type(0), values) if absent.any() else values

    def all_v4(self) -> bool:
        version, absent = self.column("ip_version")
        return bool(((version == 4) & ~absent).all())

    def targets(self) -> tuple[np.ndarray, pd.Index]:
        """Each probe's destination as a code (-1: none) into the distinct destinations the probes hold."""
        dst = self.packets["dst"]
        if not isinstance(dst.dtype, pd.CategoricalDtype):
            codes, values = pd.factorize(dst.to_numpy(object)[self.rows])
            return codes, pd.Index(values, dtype=object)
        return categories_at(dst, self.rows)


# unicornscan's key is first sought among a phase's first probes: when no key holds over them, none holds
# over all (the usual case, decided from those probes' columns alone, without taking every probe's).
_UNICORNSCAN_SCREEN = 256


def _unicornscan_key(probes: _Probes) -> int | None:
    """The syn key when every probe's seq is unicornscan's hash of its (target, ports) under one key, else None."""
    if len(probes) < UNICORNSCAN_MIN_PROBES:
        return None
    if len(probes) > _UNICORNSCAN_SCREEN and not _one_keys(probes.head(_UNICORNSCAN_SCREEN)):
        return None
    for keys, mixed in _one_keys(probes):
        if len(np.unique(mixed)) >= UNICORNSCAN_MIN_PROBES:
            return int(keys[0])
    return None


def _one_keys(probes: _Probes) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each sender byte order under which seq XOR target address XOR ports is one key over all the probes
    (IPv4 TCP, every field present): (each probe's key, each probe's address XOR ports)."""
    if not (probes.all_v4() and probes.tcp().all()):
        return []
    columns = [probes.column(c) for c in ("seq", "sport", "dport")]
    if any(absent.any() for _, absent in columns):
        return []
    seq, sport, dport = (values.astype(np.uint32) for values, _ in columns)
    ports = (dport << np.uint32(16)) | sport  # (dport << 16) + sport: sport < 2**16, so no carry
    codes, targets = probes.targets()  # parse each target once, not each probe
    target_addr = _ipv4_int(pd.Series(np.asarray(targets, dtype=object)))
    if target_addr is None or (codes < 0).any():
        return []
    addr = target_addr[codes]
    found = []
    for host_addr in (addr.byteswap(), addr):  # little-endian sender (x86, ARM), then big-endian
        mixed = host_addr ^ ports
        keys = seq ^ mixed
        if (keys == keys[0]).all():
            found.append((keys, mixed))
    return found


def _distinct(values: np.ndarray) -> int:
    """How many distinct values (non-negative integers below 2^16, as TTLs and ports are)."""
    return int(np.count_nonzero(np.bincount(values))) if len(values) else 0


def _signature(probes: _Probes, technique: str) -> tuple[str, str]:
    key = _unicornscan_key(probes)
    if key is not None:
        win = probes.present("window", tcp=True)
        template = UNICORNSCAN_TEMPLATES.get(int(win[0])) if len(win) and (win == win[0]).all() else None
        return "unicornscan", (f"seq = key 0x{key:08x} XOR target address XOR (port << 16 | source port) on all "
                               f"{len(probes)} probes: unicornscan's syn cookie"
                               + (f"; window {win[0]} as its {template} template" if template else ""))
    if technique == "CONNECT":
        return "unknown", "connect(): probes are the scanner kernel's own SYNs"
    ttl = probes.present("ttl")
    if len(ttl) == 0:
        return "unknown", ""
    ipid, win = probes.present("ip_id"), probes.present("window", tcp=True)
    v4 = probes.all_v4()
    if v4 and len(ipid) and (ipid == 0x55D1).all() and (ttl == 128).all() and len(win) and (win == 3072).all():
        return "nmap", "qscan.nse: TTL 128, IP ID 0x55d1, window 3072 on every probe (its fixed template)"
    if v4 and len(ipid) and (ipid == 54321).all() and (ttl == 255).all():
        return "zmap", "IP ID 54321 and TTL 255 on every probe"
    opts, mss = probes.filled("tcp_options", tcp=True), probes.filled("mss", tcp=True)
    syn_opts_ok = (len(opts) == 0) or bool(np.isin(opts, (0, MSS_ONLY)).all() and (mss[opts == MSS_ONLY] == 1460).all())
    # IPv4 only: nmap's own IPv6 SYNs carry hop limit 255 and window 1024 too (sample nat_nmap_ipv6).
    if v4 and (ttl == 255).all() and len(win) and np.isin(win, (1024, 1025)).all() and syn_opts_ok:
        return "masscan", "TTL 255, window 1024/1025, options none or MSS 1460 (masscan's template)"
    n_ttls = _distinct(ttl)
    if (ttl >= 37).all() and (ttl <= 59).all() and n_ttls > 1:
        return "nmap", f"TTL varies within 37–59 ({n_ttls} values): nmap's random TTL"
    sport = probes.present("sport")
    nmap_win = len(win) > 0 and np.isin(win, (1024, 2048, 3072, 4096)).all()
    one_port = len(sport) > 0 and np.bincount(sport).max() >= 0.8 * len(sport)
    if nmap_win and one_port and syn_opts_ok:
        return "nmap", "window in {1024,2048,3072,4096}, options none or MSS 1460, one source port"
    if len(win) and (win == win[0]).all() and (opts == 0).all() and len(sport) > 2:
        steps = np.diff(sport)  # in send order; each hping3 run starts again from its base port
        if (steps == 1).sum() >= 0.5 * len(steps) and (steps > 1).mean() < 0.2:
            return "hping3", f"no options, window {win[0]}, source port rising by one per probe"
    return "unknown", ""


# The packets-table columns the signatures read.
SIGNATURE_COLUMNS = ("ttl", "ip_id", "ip_proto", "window", "tcp_options", "mss", "sport", "ip_version", "seq",
                     "dport", "dst")


def tool_of_frames(packets: pd.DataFrame, frames: np.ndarray, technique: str) -> tuple[str, str]:
    """Tool and evidence for one phase: the frame numbers of its probes and its technique."""
    return _signature(_Probes(packets, packet_rows(packets["frame"].to_numpy(), frames)), technique)


def tool_of_phase(packets: pd.DataFrame, phase_probes: pd.DataFrame, technique: str) -> tuple[str, str]:
    """Tool and evidence for one phase: its probes (column probe_frame) and its technique."""
    return tool_of_frames(packets, phase_probes["probe_frame"].to_numpy(), technique)
