"""Packets table → probes table: every probe paired with its reply, or counted as unanswered.

A *probe* is a packet that asks for an answer: a TCP segment outside an established connection (a SYN,
or any flag combination with no payload: FIN, NULL, Xmas, ACK, Maimon …), a UDP datagram that answers
no earlier one, or an ICMP/ICMPv6 query. Retransmissions (same 4-tuple, sequence number and flags) form
one *probe group*; a group ends when it has been silent longer than the reply window.

A *reply* is recognised by what it must echo of its probe, never by timing alone, so scans that reuse one
source port, or one 4-tuple, pair right:

==========================  =====================================================================
probe                       reply and the key that ties it to the probe
==========================  =====================================================================
TCP (any flags)             SYN/ACK or RST carrying ACK: ack = probe seq + payload + SYN + FIN
TCP with the ACK flag       bare RST: seq = probe ack (RFC 793: a RST answers with the ack it got)
TCP / UDP                   ICMP or ICMPv6 error quoting the probe: addresses, ports (+ TCP seq)
UDP                         UDP from the probed port back to the probing port
ICMP echo / timestamp …     the matching reply type with the same identifier and sequence
==========================  =====================================================================

Karn's rule: when a probe was sent more than once before its first reply came back, that reply could
answer any of the copies, so the group is *answered* but gives no RTT sample. A reply that arrives before
the retransmission answers the first copy unambiguously; later replies count as duplicates.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..accel.keys import pack_into
from ..accel.order import key_time_order, latest_in_runs
from ..protocols import ACK, FIN, ICMP4_ERRORS, ICMP6_ERRORS, RST, SYN
from .columns import categories_at, int_column, int_column_at, ranges

DEFAULT_WINDOW_S = 10.0



class KeyFamily(enum.IntEnum):
    """How a reply names the probe it answers (the table above): a reply's key only meets probes' keys of its
    own family."""

    NEXTSEQ = 1  # SYN/ACK or RST/ACK: its ack is the probe's seq + payload + SYN + FIN
    ACK = 2  # bare RST: its seq is the probe's ack
    SEQ = 3  # ICMP error quoting a TCP probe: the quoted seq
    UDP = 4  # UDP reply, or ICMP error quoting a UDP probe: addresses and ports alone
    ICMP = 5  # ICMP query reply: identifier, sequence, and the reply type the query asks for


class KeyPart(NamedTuple):
    """One key family's rows on one side of matching: replies (`owner`: the reply's row) or probe groups
    (`owner`: the group's number), with the key each offers, in the probe's orientation (prober → target).
    Each field an array of the rows' values, or one value for all of them."""

    owner: np.ndarray
    family: int
    prober: np.ndarray | int  # address code
    target: np.ndarray | int  # address code
    prober_port: np.ndarray | int  # an ICMP query's: its identifier
    target_port: np.ndarray | int  # an ICMP query's: its sequence number
    proto: np.ndarray | int
    token: np.ndarray | int  # what else ties them: a TCP sequence or acknowledgment number, an ICMP reply type


_KEY_FIELDS = range(1, len(KeyPart._fields))  # the fields that make the key (all but the owner)
_ICMP4_REPLY = {8: 0, 13: 14, 15: 16, 17: 18}
_ICMP6_REPLY = {128: 129}
# The probes table's columns, in order (`match(columns=…)` makes only some of them).
PROBE_COLUMNS = ("probe_frame", "ts_ns", "src", "dst", "protocol", "ip_version", "sport", "dport", "seq", "flags",
                 "icmp_type", "transmissions", "reply_frame", "reply_ts_ns", "reply_kind", "reply_flags",
                 "reply_icmp_type", "reply_icmp_code", "reply_ttl", "reply_ip_id", "reply_window", "reply_ip_len",
                 "rtt_ns", "duplicates")
# Probe columns that copy a packets-table field, of the probe's packet or of its reply's.
_COPIED = {"ip_version": "ip_version", "reply_ttl": "ttl", "reply_ip_id": "ip_id", "reply_window": "window",
           "reply_ip_len": "ip_len"}


def match_columns(columns: Iterable[str] = PROBE_COLUMNS) -> tuple[str, ...]:
    """The packets-table columns `match` reads to make these probe columns (`analyzer.read(path,
    columns=match_columns(…))` is all it needs)."""
    from ..reading.schema import PACKET_COLUMNS

    keys = {"frame", "ts_ns", "src", "dst", "ip_proto", "fragment", "sport", "dport", "tcp_flags", "seq", "ack",
            "payload_len", "icmp_type", "icmp_code", "icmp_id", "icmp_seq", "q_src", "q_dst", "q_proto", "q_sport",
            "q_dport", "q_seq"}
    wanted = keys | {_COPIED[c] for c in columns if c in _COPIED}
    return tuple(c.name for c in PACKET_COLUMNS if c.name in wanted)


REPLY_KINDS = ["syn-ack", "rst", "icmp", "udp", "echo-reply"]
PROTOCOLS = ["tcp", "udp", "icmp"]


def _np(series: pd.Series, fill: int = 0, dtype: type = np.int64) -> np.ndarray:
    """A column as a plain numpy array, absent values as `fill`; a categorical as its codes (in the
    narrow integer type pandas keeps them in; -1 for absent). No copy where none is needed: a column every
    row holds, asked for in its own type, is its values; a column no row holds is `fill` repeated."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        return series.cat.codes.to_numpy()
    arr = series.array
    if isinstance(arr, pd.arrays.IntegerArray):
        if not arr._mask.any():
            return arr._data.astype(dtype, copy=False)
        if arr._mask.all():
            return np.broadcast_to(np.array(fill, dtype), len(arr))
    return series.to_numpy(dtype=dtype, na_value=fill)


def tcp_segments(proto: np.ndarray, fragment: np.ndarray, has_ports: np.ndarray, has_flags: np.ndarray) -> np.ndarray:
    """The TCP segments whose header was read (not a later fragment; ports and flags there): the rows matching
    reads as TCP."""
    return (proto == 6) & ~fragment & has_ports & has_flags


def shard_of(packets: pd.DataFrame, shards: int) -> np.ndarray:
    """Each packet's shard (0 … shards-1), such that matching each shard's packets on their own gives the rows of
    the whole table's probes table, and its counts, split between the shards: every key matching reads (a group's
    identity, a reply's key in each family, a connection's 4-tuple and its NAT form without the prober, a UDP
    datagram and its answer) holds both ports of the segment or datagram, so packets sharing the unordered pair
    of ports (an ICMP error: the pair it quotes; an ICMP query or reply: its identifier and sequence) share a
    shard. Packets matching does not read (no ports, not ICMP) go to shard 0."""
    def column(name: str) -> np.ndarray:
        return packets[name].to_numpy(np.int64, na_value=-1)

    sport, dport = column("sport"), column("dport")
    key = np.zeros(len(packets), np.uint64)
    for a, b, tag in ((sport, dport, 0), (column("q_sport"), column("q_dport"), 0),  # (a quoted pair: its own)
                      (column("icmp_id"), np.maximum(column("icmp_seq"), 0), 1 << 34)):
        rows = (key == 0) & (a >= 0) & (b >= 0)
        key[rows] = ((np.minimum(a, b)[rows] << 16 | np.maximum(a, b)[rows]) + 1 | tag).astype(np.uint64)
    key *= np.uint64(0x9E3779B97F4A7C15)  # (Fibonacci hashing: neighbouring port pairs spread over the shards)
    return ((key >> np.uint64(32)) % np.uint64(shards)).astype(np.int64)


def own_addresses(probes: pd.DataFrame) -> pd.DataFrame:
    """A probes table taken from a larger one (some of its rows, or several joined) with, in its address columns,
    only the addresses it holds, as `match` gives them (changed in place, and returned)."""
    for c in ("src", "dst"):
        if c in probes:
            probes[c] = probes[c].cat.remove_unused_categories()
    return probes


def answering(packets: pd.DataFrame, probes: pd.DataFrame) -> np.ndarray:
    """Which rows of the packets table are the replies of `probes` (their reply_frame)."""
    return np.isin(packets["frame"].to_numpy(), probes["reply_frame"].dropna().to_numpy(np.int64))


# The packets-table columns `sent_identity` reads.
IDENTITY_FIELDS = ("ip_proto", "sport", "dport", "tcp_flags", "seq", "icmp_type")
# The probes-table columns `probe_identity` reads.
PROBE_IDENTITY_FIELDS = ("protocol", "ip_version", "sport", "dport", "seq", "flags", "icmp_type")


def _identity(proto: np.ndarray, sport: np.ndarray, dport: np.ndarray, seq: np.ndarray, flags: np.ndarray,
              icmp_type: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tcp, icmp = proto == 6, (proto == 1) | (proto == 58)
    kind = np.where(tcp, flags, np.where(icmp, icmp_type, 0)) & 0xFFFF
    return (np.where(icmp, 0, sport), np.where(icmp, 0, dport),
            np.where(tcp, seq, 0) | (kind << 32) | (proto.astype(np.int64) << 48))


def sent_identity(packets: pd.DataFrame, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the packets at `rows` share with every transmission of a probe, besides its addresses, as (x, y,
    number): `match` takes packets from one address to another alike in their ports and in one number of the
    protocol, a TCP segment's seq and flags, and an ICMP query's type, for one probe sent again (int64; -1 where
    a field is absent). An ICMP query's identifier and sequence, which `match` also compares, are left out: every
    query of one type from one address to another is some probe's transmission."""
    return _identity(*(int_column_at(packets[c], rows, 0 if c == "seq" else -1)
                       for c in ("ip_proto", "sport", "dport", "seq", "tcp_flags", "icmp_type")))


def probe_identity(probes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`sent_identity` of the probes' own packets, read from the probes table."""
    protocol = probes["protocol"].astype(object).to_numpy()
    proto = np.select([protocol == "tcp", protocol == "udp", probes["ip_version"].to_numpy() == 6], [6, 17, 58], 1)
    return _identity(proto.astype(np.int64), *(int_column(probes[c], 0 if c == "seq" else -1)
                                               for c in ("sport", "dport", "seq", "flags", "icmp_type")))


def _present(series: pd.Series) -> np.ndarray:
    """True where a nullable column holds a value."""
    return ~np.asarray(series.isna())


class Connections(NamedTuple):
    """TCP connections' state before a table's first packet (chunked matching carries it from the packets
    it let go): the last event (a SYN/ACK opens, a RST closes) on each 4-tuple, in the orientation `_in_connection`
    looks them up (`exact`: a, b, x, y, open), and on each (b, x, y) without the prober's address (`loose`);
    addresses as global ids, `ids` the table's address codes' ids."""

    exact: pd.DataFrame
    loose: pd.DataFrame
    ids: np.ndarray


def connection_events(tcp: np.ndarray, flags: np.ndarray, src: np.ndarray, dst: np.ndarray, sport: np.ndarray,
                      dport: np.ndarray, ts: np.ndarray) -> pd.DataFrame:
    """The TCP events that open and close connections, keyed in the orientation of the segments that look them
    up: a SYN/ACK either way opens, a RST either way closes (`open` 1 or 0: an as-of merge that finds no event
    gives NaN in a float column, which pandas tests for missing values at C speed, where a bool column would
    become Python objects); in time order (ties: SYN/ACKs first)."""
    synack = np.flatnonzero(tcp & ((flags & (SYN | ACK)) == (SYN | ACK)))
    rst = np.flatnonzero(tcp & ((flags & RST) != 0))
    return pd.DataFrame({
        "a": np.concatenate([dst[synack], src[synack], src[rst], dst[rst]]),
        "b": np.concatenate([src[synack], dst[synack], dst[rst], src[rst]]),
        "x": np.concatenate([dport[synack], sport[synack], sport[rst], dport[rst]]),
        "y": np.concatenate([sport[synack], dport[synack], dport[rst], sport[rst]]),
        "ts": np.concatenate([ts[synack], ts[synack], ts[rst], ts[rst]]),
        "open": np.concatenate([np.ones(2 * len(synack), np.int8), np.zeros(2 * len(rst), np.int8)]),
    }).sort_values("ts", kind="stable")


def _in_connection(pk: pd.DataFrame, tcp: np.ndarray, flags: np.ndarray, src: np.ndarray, dst: np.ndarray,
                   sport: np.ndarray, dport: np.ndarray, carried: Connections | None = None) -> np.ndarray:
    """True for TCP segments sent inside an accepted connection: a SYN/ACK seen on the 4-tuple, either way
    (the client's segments after the server's SYN/ACK, and the server's own), and no RST since. `carried`: the
    state before the table's first packet, for 4-tuples with no event in the table."""
    n = len(pk)
    result = np.zeros(n, bool)
    cand = np.flatnonzero(tcp & ((flags & ACK) != 0) & ((flags & (SYN | RST)) == 0))
    if not len(cand):
        return result
    ts = pk.ts_ns.to_numpy()  # (src … dport: the caller's arrays; every row used here is TCP, so has ports)
    ev = connection_events(tcp, flags, src, dst, sport, dport, ts)
    left = pd.DataFrame({"i": cand, "a": src[cand], "b": dst[cand], "x": sport[cand], "y": dport[cand], "ts": ts[cand]})
    left = left.sort_values("ts", kind="stable")
    merged = pd.merge_asof(left, ev, on="ts", by=["a", "b", "x", "y"], direction="backward", allow_exact_matches=False)
    if carried is not None:
        _carried(merged, carried, ["a", "b", "x", "y"], carried.exact)
    result[merged["i"].to_numpy()] = _is_set(merged["open"])
    _without_prober(merged, ev, "open", result, carried=carried)  # the SYN/ACK went to the untranslated prober
    return result


def _carried(merged: pd.DataFrame, carried: Connections, by: list[str], state: pd.DataFrame) -> None:
    """Rows of an as-of merge that found no event in the table take the carried state of their key (in place)."""
    rest = merged["open"].isna().to_numpy()
    if not rest.any() or not len(state):
        return
    keys = merged.loc[rest, by].copy()
    for c in ("a", "b"):
        if c in keys:
            keys[c] = carried.ids[keys[c].to_numpy()]
    found = keys.merge(state, on=by, how="left")["open"].to_numpy()
    merged.loc[rest, "open"] = found


def _without_prober(merged: pd.DataFrame, right: pd.DataFrame, flag: str, result: np.ndarray,
                    carried: Connections | None = None, **asof: object) -> None:
    """A NAT gateway's view: rows of an as-of merge on (a, b, x, y) that found nothing on their exact
    addresses look once more without the prober's (a); `result` is set where they find `flag`. `right` is
    the merge's right side, sorted by ts; `carried`: the connections' state before it (`_in_connection`'s)."""
    rest = merged.loc[merged[flag].isna(), ["i", "a", "b", "x", "y", "ts"]]
    if len(rest):
        again = pd.merge_asof(rest, right.drop(columns="a"), on="ts", by=["b", "x", "y"], direction="backward",
                              allow_exact_matches=False, **asof)
        if carried is not None:
            _carried(again, carried, ["b", "x", "y"], carried.loose)
        result[again["i"].to_numpy()] = _is_set(again[flag])


def _is_set(flag: pd.Series) -> np.ndarray:
    """A flag column (1 or 0) of an as-of merge as bools, False where the merge found nothing (NaN)."""
    return flag.to_numpy() == 1


class Detail(NamedTuple):
    """What chunked matching (analysis/chunked.py) needs beyond the probes table: each group's last
    transmission's time (in the table's order), the times of the answers and whether a probe claimed each
    (the unsolicited ones are counted by time range), and the reply times of the NAT pairs."""

    last_ns: np.ndarray
    answer_ns: np.ndarray
    claimed: np.ndarray
    nat_ns: np.ndarray


def match(packets: pd.DataFrame, *, window_s: float = DEFAULT_WINDOW_S,
          columns: Iterable[str] | None = None) -> pd.DataFrame:
    """Pair probes with replies.

    Input: the packets table (`analyzer.read`). Output: one row per probe group, ordered by first
    transmission, with columns probe_frame, ts_ns, src, dst, protocol, ip_version, sport, dport (for ICMP
    queries: identifier and sequence), seq, flags, icmp_type, transmissions, reply_frame, reply_ts_ns,
    reply_kind, reply_flags, reply_icmp_type, reply_icmp_code, reply_ttl, reply_ip_id, reply_window,
    reply_ip_len, rtt_ns (NA when unanswered or discarded by Karn's rule), duplicates. Times in ns. src and dst
    are categoricals, as in the packets table (their categories: the addresses the probes hold).
    ``attrs["unsolicited_replies"]``: answers (SYN/ACK, RST/ACK, ICMP errors and replies) that pair with
    no probe in the capture, or arrive after the reply window. ``attrs["nat_pairs"]``: replies paired
    although the prober's address differs between probe and reply (a capture on a NAT gateway that shows
    one side translated and the other not); such a pair is tried only for replies and probes left unpaired.
    `columns`: only these columns of the probes table (PROBE_COLUMNS), in its order; a reply_* column of a
    field the packets table lacks can then be left out of both.
    """
    wanted = set(PROBE_COLUMNS if columns is None else columns)
    if wanted - set(PROBE_COLUMNS):
        raise ValueError(f"not columns of the probes table: {sorted(wanted - set(PROBE_COLUMNS))}")
    return match_detail(packets, window_s, wanted)[0]


def match_detail(packets: pd.DataFrame, window_s: float, wanted: set[str],
                 carried: Connections | None = None) -> tuple[pd.DataFrame, Detail]:
    """`match`, with the `Detail` chunked matching needs; `carried`: the connections open before the first
    of these packets (the packets before them are not in the table)."""
    window_ns = int(window_s * 1e9)
    pk = packets
    # Narrow types (each column's values fit; sums of them are done in int64 on the rows that need them).
    # Columns in their own types where absent values need no mark (views, not copies); ports and flags
    # say where they are present by a separate mask.
    proto = _np(pk.ip_proto, 0, np.uint8)
    frag = pk.fragment.to_numpy(bool)
    flags = _np(pk.tcp_flags, 0, np.uint16)
    src, dst = _np(pk.src), _np(pk.dst)
    sport, dport = _np(pk.sport, 0, np.uint16), _np(pk.dport, 0, np.uint16)
    seq, ack = _np(pk.seq, 0, np.uint32), _np(pk.ack, 0, np.uint32)
    plen = _np(pk.payload_len, 0, np.uint32)
    ts = pk.ts_ns.to_numpy()
    itype, icode = _np(pk.icmp_type, -1, np.int16), _np(pk.icmp_code, -1, np.int16)

    has_ports = _present(pk.sport)  # (a first fragment's transport header is read: it has its ports)
    tcp = tcp_segments(proto, frag, has_ports, _present(pk.tcp_flags))
    udp = (proto == 17) & has_ports  # a datagram's first fragment stands for it: its answer pairs with it
    del has_ports
    icmp = ((proto == 1) | (proto == 58)) & (itype >= 0)
    # A SYN/ACK or a RST answers; a segment holding SYN beside FIN or RST answers nothing (no stack sends one:
    # a scanner's crafted probe, such as unicornscan's "full Xmas" SAFRPU).
    crafted = tcp & ((flags & SYN) != 0) & ((flags & (FIN | RST)) != 0)
    synack = tcp & ((flags & (SYN | ACK)) == (SYN | ACK)) & ~crafted
    rst = tcp & ((flags & RST) != 0) & ~crafted
    tcp_probe = tcp & ~rst & ~synack & (((flags & SYN) != 0) | (plen == 0))
    del crafted
    tcp_probe &= ~_in_connection(pk, tcp, flags, src, dst, sport, dport, carried)
    udp_reply = _udp_replies(udp, src, dst, sport, dport, ts, window_ns)
    udp_probe = udp & ~udp_reply
    del udp, frag
    icmp_probe = icmp & (((proto == 1) & np.isin(itype, list(_ICMP4_REPLY)))
                         | ((proto == 58) & np.isin(itype, list(_ICMP6_REPLY))))
    icmp_error = icmp & (((proto == 1) & np.isin(itype, ICMP4_ERRORS)) | ((proto == 58) & np.isin(itype, ICMP6_ERRORS)))
    echo_reply = icmp & (((proto == 1) & np.isin(itype, list(_ICMP4_REPLY.values()))) | ((proto == 58) & (itype == 129)))

    # ---- probe transmissions and their groups
    probe_rows = _where(tcp_probe | udp_probe | icmp_probe)
    if not len(probe_rows):
        return _no_probes(pk, synack, rst, flags, icmp_error, echo_reply, udp_reply, window_s, wanted)
    icmp_id, icmp_seq = _np(pk.icmp_id, 0, np.int32), _np(pk.icmp_seq, 0, np.int32)
    r = probe_rows
    t_ts = ts[r]
    t_icmp, t_tcp = icmp_probe[r], tcp_probe[r]
    some_icmp, all_tcp = bool(t_icmp.any()), bool(t_tcp.all())  # (a TCP scan's: none, all)
    t_x = np.where(t_icmp, icmp_id[r], sport[r]) if some_icmp else sport[r]
    t_y = np.where(t_icmp, icmp_seq[r], dport[r]) if some_icmp else dport[r]
    t_seq = seq[r] if all_tcp else np.where(t_tcp, seq[r], 0)
    t_f = flags[r] if all_tcp else np.where(t_tcp, flags[r], np.where(t_icmp, itype[r], 0))
    del t_icmp, t_tcp
    # Transmissions ordered by (protocol, src, dst, x, y, seq, flags, ts), ties in capture order; the
    # identity packed into a few order-preserving uint64 words.
    ident, used = _pack([proto[r], src[r], dst[r], t_x, t_y, t_seq, t_f])
    rank = _time_rank(ts)  # None: the rows are in time order already

    def time_rank(rows: np.ndarray) -> np.ndarray:
        return rows if rank is None else rank[rows]

    order, same = key_time_order(ident, used, [time_rank(r)])
    order = order.astype(probe_rows.dtype, copy=False)
    tx_ts = t_ts[order]
    new_group = ~same  # a new group where the identity changes, or after a silence longer than the window
    if len(order) > 1:
        new_group[1:] |= tx_ts[1:] - tx_ts[:-1] > window_ns
    del ident, same
    g_start = _where(new_group)
    n_groups = len(g_start)
    tx_nth = np.cumsum(new_group, dtype=order.dtype)  # each transmission's group, from 1 …
    del new_group
    tx_nth[:] = np.arange(1, len(order) + 1, dtype=order.dtype) - g_start[tx_nth - 1]  # … then its place in it
    n_tx = np.diff(g_start, append=len(order)).astype(order.dtype)
    tx_rows = r[order]  # transmissions' rows, in transmission order
    g_last_ns = ts[tx_rows[g_start + n_tx - 1]]
    del t_x, t_y, t_seq, t_f, t_ts, tx_ts, order
    # Groups numbered in the output's order, by first transmission (ties: frame number): each group's first
    # transmission (g_first), its start in the transmission order (g_start) and its size (n_tx) in that order.
    frame = pk.frame.to_numpy()
    g_first = tx_rows[g_start]
    if rank is None and (len(frame) < 2 or bool((frame[1:] > frame[:-1]).all())):
        out_order = _order_of_rows(g_first, len(frame))  # rows are in (time, frame) order: no sort needed
    else:
        out_order = np.lexsort((frame[g_first], ts[g_first]))
    g_first, g_start, n_tx, g_last_ns = g_first[out_order], g_start[out_order], n_tx[out_order], g_last_ns[out_order]
    del out_order

    # ---- keys each reply candidate offers (built first: probe key families no reply offers are skipped)
    rk = _reply_keys(pk, synack, rst, icmp_error, udp_reply, echo_reply, flags, src, dst, sport, dport, seq, ack,
                     proto, itype, icmp_id, icmp_seq)
    offered = {part.family for part in rk if len(part.owner)}

    # ---- keys each group can be answered on
    pk_keys = _group_keys(g_first, offered, tcp_probe, udp_probe, icmp_probe, proto, flags, src, dst, sport, dport,
                          seq, ack, plen, itype, icmp_id, icmp_seq)

    # ---- each reply's probe: the latest transmission, in time order, of a group that offers the reply's key
    # (so a reply never precedes its probe, and among retransmissions it answers the one it followed), kept
    # when it is at most the window before the reply. Time order is (timestamp, capture order).
    c_r, c_g, c_tx = _latest_transmissions(rk, pk_keys, g_start, n_tx, tx_rows, time_rank)
    # Integer nanoseconds throughout: float64 epoch-ns would blur the window edge and ties by ~256 ns.
    keep = ts[c_r] - ts[tx_rows[c_tx]] <= window_ns
    c_r, c_g, c_tx = c_r[keep], c_g[keep], c_tx[keep]
    # Captured on a NAT gateway, a probe may show its translated source and its reply the untranslated
    # destination (or the reverse): the prober's address differs between them. Replies left unpaired meet
    # the groups left unanswered once more, on the same key without the prober's address.
    # (None to try when every group is answered, as in a scan whose every probe drew its reply.)
    answered_g = _marks(c_g, n_groups)
    if answered_g.all():
        lone = free = []
    else:
        paired_r = _marks(c_r, len(ts))
        lone = [_without(part, paired_r, prober=True) for part in rk]
        free = [_without(part, answered_g, prober=True) for part in pk_keys]
        del paired_r
    del answered_g
    n_r, n_g, n_t = _latest_transmissions(lone, free, g_start, n_tx, tx_rows, time_rank)
    keep = ts[n_r] - ts[tx_rows[n_t]] <= window_ns
    nat_pairs = int(keep.sum())
    nat_ns = ts[n_r[keep]]
    c_r, c_g, c_tx = (np.concatenate([a, b[keep]]) for a, b in ((c_r, n_r), (c_g, n_g), (c_tx, n_t)))
    del rk, pk_keys, lone, free, n_r, n_g, n_t, keep
    # Each group's answer: its earliest reply in time order; the others are duplicates.
    c_rank = time_rank(c_r)
    first = np.full(n_groups, np.iinfo(c_rank.dtype).max, c_rank.dtype)
    np.minimum.at(first, c_g, c_rank)
    ans = _where(c_rank == first[c_g])
    del first, c_rank
    dups = np.bincount(c_g, minlength=n_groups).astype(np.int32)
    np.maximum(dups - 1, 0, out=dups)

    answered = np.zeros(n_groups, bool)
    answered[c_g[ans]] = True
    rr = np.zeros(n_groups, c_r.dtype)  # each group's answer's row
    rr[c_g[ans]] = c_r[ans]
    karn_ok = np.zeros(n_groups, bool)  # answered, and sent once before the answer
    karn_ok[c_g[ans]] = tx_nth[c_tx[ans]] == 1
    del c_tx
    # Small codes (a reply kind, a protocol) in int8: the first condition that holds wins, as np.select's.
    reply_kind = np.full(n_groups, -1, np.int8)
    for k, kind in reversed(list(enumerate((synack, rst, icmp_error, udp_reply, echo_reply)))):
        reply_kind[answered & kind[rr]] = k
    protocol_code = np.full(n_groups, 2, np.int8)
    protocol_code[udp_probe[g_first]] = 1
    protocol_code[tcp_probe[g_first]] = 0

    # Unsolicited: answers no probe claimed. Bare RSTs are left out: most tear down a SYN/ACK the
    # prober's own kernel did not expect (nmap's SYN scan), which answers no probe by design.
    answers = np.flatnonzero(synack | (rst & ((flags & ACK) != 0)) | icmp_error | echo_reply | udp_reply)
    claimed = np.isin(answers, c_r)
    unsolicited = int(len(answers) - claimed.sum())
    detail = Detail(g_last_ns, ts[answers], claimed, nat_ns)
    # Free what the output does not need before building it.
    del (answers, proto, src, dst, ack, plen, synack, rst, udp_reply, icmp_error, echo_reply, probe_rows, r, tx_rows,
         g_start, tx_nth, c_r, c_g, ans)

    def nullable(dtype: str, values: np.ndarray, present: np.ndarray) -> pd.api.extensions.ExtensionArray:
        return _masked(dtype, np.where(present, values, 0), present)

    def reply_col(series: pd.Series) -> pd.api.extensions.ExtensionArray:
        arr = series.array
        return _masked(str(series.dtype), np.where(answered, arr._data[rr], 0), answered & ~arr._mask[rr])

    is_tcp, is_icmp = tcp_probe[g_first], icmp_probe[g_first]
    reply_tcp, reply_icmp = answered & tcp[rr], answered & icmp[rr]
    dport_values = np.where(is_icmp, icmp_seq[g_first], dport[g_first])  # (an ICMP query's: its sequence)
    build = {  # each column made only when asked for
        "probe_frame": lambda: frame[g_first],
        "ts_ns": lambda: ts[g_first],
        "src": lambda: _addresses(pk.src, g_first),
        "dst": lambda: _addresses(pk.dst, g_first),
        "protocol": lambda: pd.Categorical.from_codes(protocol_code, PROTOCOLS),
        "ip_version": lambda: pk.ip_version.to_numpy()[g_first],
        "sport": lambda: _masked("UInt16", np.where(is_icmp, icmp_id[g_first], sport[g_first]),  # (ICMP: its id)
                                 np.ones(n_groups, bool)),
        "dport": lambda: (_masked("UInt16", dport_values, np.ones(n_groups, bool)) if (dport_values >= 0).all()
                          else pd.array(dport_values, dtype="UInt16")),
        "seq": lambda: nullable("UInt32", seq[g_first], is_tcp),
        "flags": lambda: nullable("UInt16", flags[g_first], is_tcp),
        "icmp_type": lambda: nullable("UInt8", itype[g_first], is_icmp),
        "transmissions": lambda: n_tx.astype(np.int64),
        "reply_frame": lambda: nullable("Int64", frame[rr], answered),
        "reply_ts_ns": lambda: nullable("Int64", ts[rr], answered),
        "reply_kind": lambda: pd.Categorical.from_codes(reply_kind, REPLY_KINDS),
        "reply_flags": lambda: nullable("UInt16", flags[rr], reply_tcp),
        "reply_icmp_type": lambda: nullable("UInt8", itype[rr], reply_icmp),
        "reply_icmp_code": lambda: nullable("UInt8", icode[rr], reply_icmp),
        "reply_ttl": lambda: reply_col(pk.ttl),
        "reply_ip_id": lambda: reply_col(pk.ip_id),
        "reply_window": lambda: reply_col(pk.window),
        "reply_ip_len": lambda: reply_col(pk.ip_len),
        "rtt_ns": lambda: nullable("Int64", ts[rr] - ts[g_first], karn_ok),
        "duplicates": lambda: dups.astype(np.int64),
    }
    # (copy=False: the columns are made here for the table; pandas would otherwise copy each once more)
    out = pd.DataFrame({name: build[name]() for name in PROBE_COLUMNS if name in wanted}, copy=False)
    out.attrs["unsolicited_replies"] = unsolicited
    out.attrs["window_s"] = window_s
    out.attrs["nat_pairs"] = nat_pairs
    return out, detail


def _where(mask: np.ndarray) -> np.ndarray:
    """np.flatnonzero(mask), as int32 when the rows' numbers fit (half the memory of every index array
    taken from it)."""
    rows = np.flatnonzero(mask)
    return rows.astype(np.int32) if len(mask) < 2**31 else rows


def _marks(values: np.ndarray, n: int) -> np.ndarray:
    """A boolean array of length n, True at `values`."""
    out = np.zeros(n, bool)
    out[values] = True
    return out


def _without(part: KeyPart, taken: np.ndarray, *, prober: bool) -> KeyPart:
    """A key part without the rows whose owner is `taken` (a boolean array indexed by owner); with `prober`,
    the prober's address set to 0, so keys that differ only there become equal."""
    rows = ~taken[part.owner]
    kept = KeyPart(*(v[rows] if np.ndim(v) else v for v in part))
    return kept._replace(prober=0) if prober else kept


_MASKED = {"UInt8": (pd.arrays.IntegerArray, np.uint8), "UInt16": (pd.arrays.IntegerArray, np.uint16),
           "UInt32": (pd.arrays.IntegerArray, np.uint32), "UInt64": (pd.arrays.IntegerArray, np.uint64),
           "Int64": (pd.arrays.IntegerArray, np.int64)}


def _masked(dtype: str, values: np.ndarray, present: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """A nullable integer array straight from values and presence (no per-element conversion)."""
    cls, np_dtype = _MASKED[dtype]
    return cls(np.asarray(values).astype(np_dtype), ~np.asarray(present, bool))


def _addresses(column: pd.Series, rows: np.ndarray) -> pd.Categorical:
    """column.iloc[rows] of an address categorical, with the addresses these rows hold as its categories
    (in the packets table's order: IPv4 by value, then IPv6), taken by code: no text per row."""
    return pd.Categorical.from_codes(*categories_at(column, rows))


def _reply_keys(pk: pd.DataFrame, synack: np.ndarray, rst: np.ndarray, icmp_error: np.ndarray, udp_reply: np.ndarray,
                echo_reply: np.ndarray, flags: np.ndarray, src: np.ndarray, dst: np.ndarray, sport: np.ndarray,
                dport: np.ndarray, seq: np.ndarray, ack: np.ndarray, proto: np.ndarray, itype: np.ndarray,
                icmp_id: np.ndarray, icmp_seq: np.ndarray) -> list[KeyPart]:
    """The key each reply offers (owner: its row), in every family (`KeyFamily`) it could answer in."""
    q_src, q_dst = _np(pk.q_src), _np(pk.q_dst)
    q_sport, q_dport = _np(pk.q_sport, -1, np.int32), _np(pk.q_dport, -1, np.int32)
    q_seq, q_proto = _np(pk.q_seq, 0, np.uint32), _np(pk.q_proto, -1, np.int16)
    rk = []
    sel = _where((synack | rst) & ((flags & ACK) != 0))
    rk.append(KeyPart(sel, KeyFamily.NEXTSEQ, dst[sel], src[sel], dport[sel], sport[sel], 6, ack[sel]))
    sel = _where(rst & ((flags & ACK) == 0))
    rk.append(KeyPart(sel, KeyFamily.ACK, dst[sel], src[sel], dport[sel], sport[sel], 6, seq[sel]))
    sel = _where(icmp_error & (q_proto == 6) & (q_sport >= 0))
    rk.append(KeyPart(sel, KeyFamily.SEQ, q_src[sel], q_dst[sel], q_sport[sel], q_dport[sel], 6, q_seq[sel]))
    sel = _where(icmp_error & (q_proto == 17) & (q_sport >= 0))
    rk.append(KeyPart(sel, KeyFamily.UDP, q_src[sel], q_dst[sel], q_sport[sel], q_dport[sel], 17, 0))
    sel = _where(udp_reply)
    rk.append(KeyPart(sel, KeyFamily.UDP, dst[sel], src[sel], dport[sel], sport[sel], 17, 0))
    sel = _where(echo_reply)
    rk.append(KeyPart(sel, KeyFamily.ICMP, dst[sel], src[sel], icmp_id[sel], icmp_seq[sel], proto[sel], itype[sel]))
    return rk


def _group_keys(g_first: np.ndarray, offered: set[int], tcp_probe: np.ndarray, udp_probe: np.ndarray,
                icmp_probe: np.ndarray, proto: np.ndarray, flags: np.ndarray, src: np.ndarray, dst: np.ndarray,
                sport: np.ndarray, dport: np.ndarray, seq: np.ndarray, ack: np.ndarray, plen: np.ndarray,
                itype: np.ndarray, icmp_id: np.ndarray, icmp_seq: np.ndarray) -> list[KeyPart]:
    """The keys each probe group can be answered on (owner: the group), in the families some reply offers."""
    n_groups = len(g_first)
    g_ids = np.arange(n_groups, dtype=np.int32 if n_groups < 2**31 else np.int64)
    first = g_first
    pk_keys = []
    is_tcp_g = tcp_probe[first]
    if is_tcp_g.any():
        rows, gid = (first, g_ids) if is_tcp_g.all() else (first[is_tcp_g], g_ids[is_tcp_g])
        f = flags[rows]
        base = (src[rows], dst[rows], sport[rows], dport[rows], 6)
        if KeyFamily.NEXTSEQ in offered:
            nxt = seq[rows]  # uint32 arithmetic (in a copy): modulo 2^32, as sequence numbers are
            nxt += plen[rows]
            nxt += (f & SYN) != 0
            nxt += (f & FIN) != 0
            pk_keys.append(KeyPart(gid, KeyFamily.NEXTSEQ, *base, nxt))
        if KeyFamily.SEQ in offered:
            pk_keys.append(KeyPart(gid, KeyFamily.SEQ, *base, seq[rows]))
        has_ack = (f & ACK) != 0 if KeyFamily.ACK in offered else None
        if has_ack is not None and has_ack.any():  # (a SYN scan's probes: none)
            pk_keys.append(KeyPart(gid[has_ack], KeyFamily.ACK,
                                   *(v[has_ack] if isinstance(v, np.ndarray) else v for v in base),
                                   ack[rows][has_ack]))
    is_udp_g = udp_probe[first]
    if is_udp_g.any() and KeyFamily.UDP in offered:
        rows, gid = first[is_udp_g], g_ids[is_udp_g]
        pk_keys.append(KeyPart(gid, KeyFamily.UDP, src[rows], dst[rows], sport[rows], dport[rows], 17, 0))
    is_icmp_g = icmp_probe[first]
    if is_icmp_g.any() and KeyFamily.ICMP in offered:
        rows, gid = first[is_icmp_g], g_ids[is_icmp_g]
        want = np.full(len(rows), -1, np.int64)
        for p_, table in ((1, _ICMP4_REPLY), (58, _ICMP6_REPLY)):
            for t_, reply in table.items():
                want[(proto[rows] == p_) & (itype[rows] == t_)] = reply
        pk_keys.append(KeyPart(gid, KeyFamily.ICMP, src[rows], dst[rows], icmp_id[rows], icmp_seq[rows], proto[rows],
                               want))
    return pk_keys


def _spans(parts: list[KeyPart]) -> list[tuple[int, int]]:
    """Where each key part's rows lie among all the parts' rows."""
    ends = np.cumsum([len(part.owner) for part in parts]).tolist()
    return list(zip([0] + ends[:-1], ends))


def _value_range(parts: list[KeyPart], j: int) -> tuple[int, int]:
    """The least and greatest value of field j over non-empty key parts (each an array or one value)."""
    values = [(int(v), int(v)) if np.ndim(v) == 0 else (int(v.min()), int(v.max()))
              for v in (p[j] for p in parts)]
    return min(lo for lo, _ in values), max(hi for _, hi in values)


def _pack(columns: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """Integer columns → as few uint64 words as hold them, most significant first, each column offset by
    its minimum and given the bits its range needs (none for a constant column): the words sort (and
    compare) as the columns do. Built in place (`keys.pack_into`): one column's int64 copy at a time beside the
    words. Also returns the bits the last word uses."""
    words: list[np.ndarray] = []
    n = len(columns[0]) if columns else 0
    word = np.zeros(n, np.uint64)
    used = 0
    for c in columns:
        lo, hi = (int(c.min()), int(c.max())) if n else (0, 0)
        bits = (hi - lo).bit_length()
        if used + bits > 64:
            words.append(word)
            word = np.zeros(n, np.uint64)
            used = 0
        pack_into(word, c, lo, hi, bits, None)  # (a column of one value takes no bits, and no copy)
        used += bits
    words.append(word)
    return words, used


def _time_rank(ts: np.ndarray) -> np.ndarray | None:
    """Each row's place in time order (ties: capture order); None when the rows are in that order already."""
    if len(ts) < 2 or bool((ts[1:] >= ts[:-1]).all()):
        return None
    rank = np.empty(len(ts), np.int64)
    rank[np.argsort(ts, kind="stable")] = np.arange(len(ts))
    return rank


def _order_of_rows(rows: np.ndarray, n: int) -> np.ndarray:
    """np.argsort(rows) for distinct row numbers below n, in O(n) (a mark per row, no sort)."""
    at = np.full(n, -1, np.int32 if n < 2**31 else np.int64)
    at[rows] = np.arange(len(rows), dtype=at.dtype)
    return at[at >= 0]


def _latest_transmissions(left_parts: list[KeyPart], right_parts: list[KeyPart], g_start: np.ndarray, n_tx: np.ndarray,
                          tx_rows: np.ndarray, time_rank: Callable[[np.ndarray], np.ndarray]
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every reply (left key parts, owned by reply rows), the latest transmission before it in time order
    among the groups (right key parts, owned by groups) whose keys equal its own.

    Every transmission of every (group, key) row and every reply go into one table sorted by (key, time
    rank): a reply's answer is the last transmission before it in its key's run. Returns (reply row, group,
    transmission position) for the replies that have one.
    """
    empty = np.zeros(0, np.int64)
    left_parts, right_parts = ([p for p in parts if len(p.owner)] for parts in (left_parts, right_parts))
    nl, nr = (sum(len(p.owner) for p in parts) for parts in (left_parts, right_parts))
    if not nl or not nr:
        return empty, empty, empty
    reply_row, group = (np.concatenate([p.owner for p in parts]) for parts in (left_parts, right_parts))
    # Pack the keys column by column into uint64 words, each column offset and sized by the right side's
    # range: a left value outside it matches nothing (that row is dropped), so every kept value fits.
    # Part by part, in each part's own types: a column one value for a whole part (a key family, a protocol)
    # is never made into an array, and a column one value on the right takes no bits.
    keep = np.ones(nl, bool)
    lwords: list[np.ndarray] = []
    rwords: list[np.ndarray] = []
    lw, rw = np.zeros(nl, np.uint64), np.zeros(nr, np.uint64)
    used = 0
    l_spans, r_spans = _spans(left_parts), _spans(right_parts)
    for j in _KEY_FIELDS:
        lo, hi = _value_range(right_parts, j)
        bits = (hi - lo).bit_length()
        if used + bits > 64:
            lwords.append(lw)
            rwords.append(rw)
            lw, rw = np.zeros(nl, np.uint64), np.zeros(nr, np.uint64)
            used = 0
        for part, (a, b) in zip(right_parts, r_spans):
            pack_into(rw[a:b], part[j], lo, hi, bits, None)
        for part, (a, b) in zip(left_parts, l_spans):
            pack_into(lw[a:b], part[j], lo, hi, bits, keep[a:b])
        used += bits
    lwords.append(lw)
    rwords.append(rw)
    kept = _where(keep)
    del keep, lw, rw
    reply_row = reply_row[kept]
    # Right rows expanded to their transmissions (positions in the transmission order).
    n_of = n_tx[group]
    ev_tx = ranges(g_start[group], n_of)  # (every probe sent once: the groups' starts themselves)
    n_ev = len(ev_tx)
    # Each transmission's right row (none to expand when every probe was sent once: the rows themselves).
    owner = None if n_ev == nr else np.repeat(np.arange(nr, dtype=np.int32 if nr < 2**31 else np.int64), n_of)
    ev_group = group if owner is None else group[owner]
    words = []
    while rwords:  # each word: the transmissions' (their right rows'), then the replies' (taken in place)
        word = np.empty(n_ev + len(kept), np.uint64)
        right = rwords.pop(0)
        if owner is None:
            word[:n_ev] = right
        else:
            np.take(right, owner, out=word[:n_ev])
        np.take(lwords.pop(0), kept, out=word[n_ev:])
        words.append(word)
        del right
    del owner, kept, word
    ranks = time_rank(tx_rows[ev_tx]), time_rank(reply_row)
    top = max(int(r.max()) for r in ranks if len(r))
    when = np.concatenate(ranks, dtype=np.uint32 if (top + 1) * len(right_parts) < 2**32 else np.int64,
                          casting="unsafe")  # (ranks are non-negative and fit)
    del ranks
    if len(right_parts) > 1:
        # A transmission offered under several keys (key families) is an entry per key: time ranks made
        # distinct by the key part, without changing their order (a reply is one entry: its own row).
        part = np.repeat(np.arange(len(right_parts), dtype=np.uint8), [len(p.owner) for p in right_parts])
        when *= len(right_parts)
        when[:n_ev] += np.repeat(part, n_of)
        del part
    del n_of
    box = [when]
    del when
    o, same = key_time_order(words, used, box)  # (takes the ranks out of the box: it frees them when it can)
    reply_at, ev = latest_in_runs(o, same, n_ev)
    return reply_row[reply_at], ev_group[ev], ev_tx[ev]


def _no_probes(pk: pd.DataFrame, synack: np.ndarray, rst: np.ndarray, flags: np.ndarray, icmp_error: np.ndarray,
               echo_reply: np.ndarray, udp_reply: np.ndarray, window_s: float,
               wanted: set[str]) -> tuple[pd.DataFrame, Detail]:
    """The probes table with no rows (a capture of replies only, or of nothing)."""
    # Matching a one-SYN table gives the empty probes table its exact columns and dtypes.
    out = match(_one_probe_table(), window_s=window_s, columns=wanted).iloc[0:0].copy()
    answers = np.flatnonzero(synack | (rst & ((flags & ACK) != 0)) | icmp_error | echo_reply | udp_reply)
    out.attrs["unsolicited_replies"] = len(answers)
    out.attrs["nat_pairs"] = 0
    out.attrs["window_s"] = window_s
    none = np.zeros(0, np.int64)
    return out, Detail(none, pk.ts_ns.to_numpy()[answers], np.zeros(len(answers), bool), none)


def _one_probe_table() -> pd.DataFrame:
    from ..reading.schema import PACKET_COLUMNS, column, frame_from_columns

    cols: dict[str, object] = {}
    for c in PACKET_COLUMNS:
        if c.dtype == "category":
            cols[c.name] = pd.Categorical.from_codes([0], categories=pd.Index(["0.0.0.0"], dtype=object))
        elif c.dtype == "bool":
            cols[c.name] = np.zeros(1, bool)
        else:
            present = None if c.name in ("ip_proto", "tcp_flags", "sport", "dport", "seq", "ack", "payload_len") \
                else np.zeros(1, bool)
            value = {"ip_proto": 6, "tcp_flags": SYN, "ip_version": 4}.get(c.name, 0)
            cols[c.name] = column(c.dtype, np.array([value]), present)
    return frame_from_columns(cols)


def _udp_replies(udp: np.ndarray, src: np.ndarray, dst: np.ndarray, sport: np.ndarray, dport: np.ndarray,
                 ts: np.ndarray, window_ns: int) -> np.ndarray:
    """UDP datagrams that follow, within the window, a datagram going the other way on the same ports."""
    result = np.zeros(len(udp), bool)
    rows = np.flatnonzero(udp)
    if not len(rows):
        return result
    left = pd.DataFrame({"i": rows, "a": dst[rows], "b": src[rows], "x": dport[rows], "y": sport[rows], "ts": ts[rows]})
    right = pd.DataFrame({"a": src[rows], "b": dst[rows], "x": sport[rows], "y": dport[rows], "ts": ts[rows],
                          "seen": np.ones(len(rows), np.int8)})
    right = right.sort_values("ts", kind="stable")
    merged = pd.merge_asof(left.sort_values("ts", kind="stable"), right, on="ts", by=["a", "b", "x", "y"],
                           direction="backward", allow_exact_matches=False, tolerance=window_ns)
    result[merged["i"].to_numpy()] = _is_set(merged["seen"])
    # The reply is addressed to the untranslated prober (same replier, same ports).
    exact = result.copy()
    _without_prober(merged, right, "seen", result, tolerance=window_ns)
    loose = np.flatnonzero(result & ~exact)
    if len(loose):  # a datagram its own peer answers on the exact reversed ports is a probe: a scanner that sends
        # two targets the same ports from one source port is not a NAT's untranslated reply
        ahead = pd.merge_asof(left[np.isin(left["i"], loose)].sort_values("ts", kind="stable"), right, on="ts",
                              by=["a", "b", "x", "y"], direction="forward", allow_exact_matches=False,
                              tolerance=window_ns)
        result[ahead["i"].to_numpy()[_is_set(ahead["seen"])]] = False
    return result

