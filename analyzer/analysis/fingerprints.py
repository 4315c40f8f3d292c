"""Which tool sent a scan phase, from what its probes' headers give away. Each signature names its evidence.

Signatures hold wherever the capture was taken: a TTL is read as the initial TTL it implies (the least of
32, 64, 128, 255 at or above it) and the hops between scanner and sensor, never as a number the tool sends.

===========  ======================================================================================
tool         signature of its probes (over 90 % of a phase's probes, the rest retransmissions or strays)
===========  ======================================================================================
unicornscan  IPv4 TCP; seq XOR target address XOR (dport << 16 | sport) falls into keys each shared by >= 3
             probes whose (address, ports) differ: its syn cookie (TCPHASHTRACK), one key per run or repeat;
             any flags, -W template, TTL
qscan.nse    IPv4 ID 0x55d1 (21969), window 3072, initial TTL 128 (its fixed template)
zmap         IPv4 ID 54321, initial TTL 255
masscan      IPv4, initial TTL 255, TCP window 1024 or 1025, SYN options none or MSS 1460 alone
nmap         raw probes: TTLs spread over one 23-value window at or below 59 (nmap draws each from 37–59;
             off the scanner's link the window moves down by the hops), or (3+ probes) TCP window in
             {1024, 2048, 3072, 4096} with SYN options none or MSS 1460 alone and one source port
hping3       (3+ probes) no TCP options, one window, source port rising by one per probe (its defaults); or
             window 512 with no options from one source port (its --scan mode)
===========  ======================================================================================

Hops: from a template's initial TTL to the TTL its probes arrive with; for nmap's random TTL, 37 minus
the least TTL to 59 minus the greatest (one number once the probes cover the window). A connect() scan is
sent by the scanner's kernel, so no tool signature survives: "unknown" (its hops from the kernel's initial
TTL). unicornscan's -msf is the exception: its own sender makes the SYNs, so its key still shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..protocols import initial_ttl
from .columns import categories_at, masked_parts, packet_rows

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

    def frames(self, most: int = 3) -> tuple[int, ...]:
        """The frame numbers of the first `most` probes and of the last."""
        frame = self.packets["frame"].to_numpy()
        rows = self.rows if len(self.rows) <= most + 1 else np.append(self.rows[:most], self.rows[-1])
        return tuple(int(f) for f in frame[rows])

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


def _unicornscan_keys(probes: _Probes) -> list[int] | None:
    """The syn keys when every probe's seq is unicornscan's hash of its (target, ports) under a key that at
    least UNICORNSCAN_MIN_PROBES probes of distinct (target, ports) share (a run draws one key; -R repeats
    and runs in turn draw one each), in order of first use; else None."""
    if len(probes) < UNICORNSCAN_MIN_PROBES:
        return None
    if len(probes) > _UNICORNSCAN_SCREEN and not _shared_keys(probes.head(_UNICORNSCAN_SCREEN)):
        return None
    found = _shared_keys(probes)
    return found[0] if found else None


def _shared_keys(probes: _Probes) -> list[list[int]]:
    """For each sender byte order under which seq XOR target address XOR ports falls into keys that each hold
    UNICORNSCAN_MIN_PROBES or more probes of distinct (address, ports) (IPv4 TCP, every field present): the
    keys in order of first use. A random seq makes a key per probe."""
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
        if len(keys) > 1 and keys.min() == keys.max():  # (one key: the usual run)
            if len(np.unique(mixed)) >= UNICORNSCAN_MIN_PROBES:
                found.append([int(keys[0])])
            continue
        distinct, first, key_of = np.unique(keys, return_index=True, return_inverse=True)
        if len(distinct) * UNICORNSCAN_MIN_PROBES > len(keys):
            continue
        pairs = np.unique(np.stack([key_of.astype(np.uint64), mixed.astype(np.uint64)]), axis=1)
        if (np.bincount(pairs[0].astype(np.int64), minlength=len(distinct)) >= UNICORNSCAN_MIN_PROBES).all():
            found.append([int(k) for k in distinct[np.argsort(first)]])
    return found


def _distinct(values: np.ndarray) -> int:
    """How many distinct values (non-negative integers below 2^16, as TTLs and ports are)."""
    return int(np.count_nonzero(np.bincount(values))) if len(values) else 0


NMAP_TTL = (37, 59)  # nmap's raw packets: TTL drawn per packet from 37-59 (get_random_uint() % 23 + 37)
SHARE = 0.9  # of a phase's probes a signature must hold for (the rest: retransmissions, strays)
MIN_PROBES = 3  # probes a signature that compares probes (a TTL spread, a source port, its steps) needs


def _mostly(hit: np.ndarray) -> bool:
    return len(hit) > 0 and hit.mean() >= SHARE


@dataclass(frozen=True)
class ToolVerdict:
    """Which tool sent a phase, why (evidence), how many hops the sensor saw its probes travel (None: cannot
    tell), and the frames of the probes that show it."""

    tool: str
    evidence: str
    hops: int | None = None
    frames: tuple[int, ...] = ()


def _hops_text(hops: int | None, low: int | None = None, high: int | None = None) -> str:
    if hops is not None:
        if hops == 0:
            return "the sensor is next to the scanner"
        return f"the sensor is {hops} hop{'' if hops == 1 else 's'} from the scanner"
    if low is not None and high is not None:
        return f"the sensor is {low}–{high} hops from the scanner"
    return ""


def _template_hops(ttl: np.ndarray, initial: int | None = None) -> tuple[int | None, str, str]:
    """(hops, the TTL in words, where the sensor is in words) from a fixed initial TTL (by default the one the
    commonest TTL implies) to the TTL most probes carry."""
    mode = int(np.bincount(ttl).argmax())
    initial = initial_ttl(mode) if initial is None else initial
    hops = initial - mode if mode <= initial else None
    return hops, (f"TTL {mode} (sent as {initial})" if hops else f"TTL {mode}"), _hops_text(hops)


def _random_ttl(ttl: np.ndarray) -> tuple[bool, int | None, str]:
    """nmap's random TTL (37-59 when sent) seen some hops on: SHARE of the probes' TTLs within one 23-value
    window at or below 59, at least MIN_PROBES distinct values among them. Hops: 37 - least .. 59 - greatest (one
    number once the probes span the window)."""
    width = NMAP_TTL[1] - NMAP_TTL[0]
    if len(ttl) < MIN_PROBES:
        return False, None, ""
    counts = np.bincount(ttl, minlength=256)[:NMAP_TTL[1] + 1]
    in_window = np.convolve(counts, np.ones(width + 1, np.int64))[width:]  # in_window[i]: TTLs i..i+width
    start = int(in_window.argmax())
    core = ttl[(ttl >= start) & (ttl <= start + width)]
    if len(core) < SHARE * len(ttl) or _distinct(core) < MIN_PROBES:
        return False, None, ""
    low, high = NMAP_TTL[0] - int(core.min()), NMAP_TTL[1] - int(core.max())
    if high < 0 or low > high:
        return False, None, ""
    low = max(low, 0)
    hops = high if low == high else None
    where = _hops_text(hops, low, high)
    return True, hops, (f"TTL varies within {int(core.min())}–{int(core.max())} ({_distinct(core)} values): nmap's random "
                        f"TTL ({NMAP_TTL[0]}–{NMAP_TTL[1]} when sent); {where}")


def _signature(probes: _Probes, technique: str) -> ToolVerdict:
    frames = probes.frames()
    keys = _unicornscan_keys(probes)
    if keys is not None:
        win = probes.present("window", tcp=True)
        template = UNICORNSCAN_TEMPLATES.get(int(win[0])) if len(win) and (win == win[0]).all() else None
        named = ", ".join(f"0x{k:08x}" for k in keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
        return ToolVerdict("unicornscan", (
            f"seq = key {named} XOR target address XOR (port << 16 | source port) on all {len(probes)} probes"
            + (f" ({len(keys)} keys: one per run or repeat)" if len(keys) > 1 else "") + ": unicornscan's syn cookie"
            + (f"; window {win[0]} as its {template} template" if template else "")), None, frames)
    ttl = probes.present("ttl")
    if technique == "CONNECT":
        hops, _, where = _template_hops(ttl) if len(ttl) else (None, "", "")
        return ToolVerdict("unknown", "connect(): probes are the scanner kernel's own SYNs"
                           + (f"; {where}" if where else ""), hops, frames)
    if len(ttl) == 0:
        return ToolVerdict("unknown", "")
    ipid, win = probes.present("ip_id"), probes.present("window", tcp=True)
    v4 = probes.all_v4()
    high = ttl > 128  # (initial TTL 255; each test below looks at the cheap fields first)
    if v4 and len(win) and _mostly(ipid == 0x55D1) and _mostly(win == 3072) and _mostly((ttl > 64) & ~high):
        hops, text, where = _template_hops(ttl, 128)
        return ToolVerdict("nmap", f"qscan.nse: IP ID 0x55d1, window 3072, {text} (its fixed template); {where}",
                           hops, frames)
    if v4 and _mostly(ipid == 54321) and _mostly((ipid == 54321) & high):
        hops, text, where = _template_hops(ttl, 255)
        return ToolVerdict("zmap", f"IP ID 54321, {text} (zmap's template); {where}", hops, frames)
    opts, mss = probes.filled("tcp_options", tcp=True), probes.filled("mss", tcp=True)
    syn_opts_ok = (len(opts) == 0) or bool(np.isin(opts, (0, MSS_ONLY)).all() and (mss[opts == MSS_ONLY] == 1460).all())
    # IPv4 only: nmap's own IPv6 SYNs carry hop limit 255 and window 1024 too (sample nat_nmap_ipv6).
    if v4 and _mostly(high) and len(win) and _mostly(np.isin(win, (1024, 1025))) and syn_opts_ok:
        hops, text, where = _template_hops(ttl, 255)
        return ToolVerdict("masscan", f"{text}, window 1024/1025, options none or MSS 1460 (masscan's template); "
                           f"{where}", hops, frames)
    is_random, hops, text = _random_ttl(ttl)
    if is_random:
        return ToolVerdict("nmap", text, hops, frames)
    if len(probes) < MIN_PROBES:
        return ToolVerdict("unknown", f"{len(probes)} probe(s): too few to tell a tool by its probes' habits")
    sport = probes.present("sport")
    nmap_win = len(win) > 0 and _mostly(np.isin(win, (1024, 2048, 3072, 4096)))
    one_port = len(sport) > 0 and np.bincount(sport).max() >= 0.8 * len(sport)
    if nmap_win and one_port and syn_opts_ok:
        return ToolVerdict("nmap", "window in {1024,2048,3072,4096}, options none or MSS 1460, one source port",
                           None, frames)
    if len(win) and _mostly(win == 512) and (opts == 0).all() and one_port:
        hops, text, where = _template_hops(ttl)
        return ToolVerdict("hping3", f"window 512, no options (hping3's defaults), one source port (its --scan mode), "
                           f"{text}; {where}", hops, frames)
    tcp = probes.tcp()
    one_window = len(win) == 0 or (win == win[0]).all()
    if one_window and (opts == 0).all() and len(sport) > 2:
        steps = np.diff(sport)  # in send order; each hping3 run starts again from its base port
        if (steps == 1).sum() >= 0.5 * len(steps) and (steps > 1).mean() < 0.2:
            hops, text, where = _template_hops(ttl)
            what = f"no options, window {win[0]}, " if tcp.any() and len(win) else ""
            return ToolVerdict("hping3", f"{what}source port rising by one per probe (hping3's default), {text}; "
                               f"{where}", hops, frames)
    return ToolVerdict("unknown", "")


# The packets-table columns the signatures read.
SIGNATURE_COLUMNS = ("ttl", "ip_id", "ip_proto", "window", "tcp_options", "mss", "sport", "ip_version", "seq",
                     "dport", "dst")


def tool_verdict(packets: pd.DataFrame, frames: np.ndarray, technique: str) -> ToolVerdict:
    """The tool that sent one phase, from the frame numbers of its probes (in send order) and its technique."""
    return _signature(_Probes(packets, packet_rows(packets["frame"].to_numpy(), frames)), technique)


def tool_of_frames(packets: pd.DataFrame, frames: np.ndarray, technique: str) -> tuple[str, str]:
    """Tool and evidence for one phase: the frame numbers of its probes and its technique."""
    verdict = tool_verdict(packets, frames, technique)
    return verdict.tool, verdict.evidence


def tool_of_phase(packets: pd.DataFrame, phase_probes: pd.DataFrame, technique: str) -> tuple[str, str]:
    """Tool and evidence for one phase: its probes (column probe_frame) and its technique."""
    return tool_of_frames(packets, phase_probes["probe_frame"].to_numpy(), technique)
