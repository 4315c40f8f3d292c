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

import numpy as np
import pandas as pd

from .flags import ACK, FIN, RST, SYN

DEFAULT_WINDOW_S = 10.0

# Key families: a reply key only meets probe keys of the same family.
_K_NEXTSEQ, _K_ACK, _K_SEQ, _K_UDP, _K_ICMP = 1, 2, 3, 4, 5
_KEY = ["fam", "a", "b", "x", "y", "p", "s"]
_ICMP4_REPLY = {8: 0, 13: 14, 15: 16, 17: 18}
_ICMP6_REPLY = {128: 129}
REPLY_KINDS = ["syn-ack", "rst", "icmp", "udp", "echo-reply"]
PROTOCOLS = ["tcp", "udp", "icmp"]


def _np(series: pd.Series, fill: int = 0, dtype: type = np.int64) -> np.ndarray:
    if isinstance(series.dtype, pd.CategoricalDtype):
        return series.cat.codes.to_numpy(np.int64)
    return series.to_numpy(dtype=dtype, na_value=fill)


def _in_connection(pk: pd.DataFrame, tcp: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """True for TCP segments sent inside a connection the peer accepted (SYN/ACK seen, no RST since)."""
    n = len(pk)
    result = np.zeros(n, bool)
    cand = np.flatnonzero(tcp & ((flags & ACK) != 0) & ((flags & (SYN | RST)) == 0))
    if not len(cand):
        return result
    synack = np.flatnonzero(tcp & ((flags & (SYN | ACK)) == (SYN | ACK)))
    rst = np.flatnonzero(tcp & ((flags & RST) != 0))
    src, dst = _np(pk.src), _np(pk.dst)
    sport, dport, ts = _np(pk.sport), _np(pk.dport), pk.ts_ns.to_numpy()
    # Events keyed in the candidate's orientation: a SYN/ACK from the peer opens, a RST either way closes.
    ev = pd.DataFrame({
        "a": np.concatenate([dst[synack], src[rst], dst[rst]]),
        "b": np.concatenate([src[synack], dst[rst], src[rst]]),
        "x": np.concatenate([dport[synack], sport[rst], dport[rst]]),
        "y": np.concatenate([sport[synack], dport[rst], sport[rst]]),
        "ts": np.concatenate([ts[synack], ts[rst], ts[rst]]),
        "open": np.concatenate([np.ones(len(synack), bool), np.zeros(2 * len(rst), bool)]),
    }).sort_values("ts", kind="stable")
    left = pd.DataFrame({"i": cand, "a": src[cand], "b": dst[cand], "x": sport[cand], "y": dport[cand], "ts": ts[cand]})
    left = left.sort_values("ts", kind="stable")
    merged = pd.merge_asof(left, ev, on="ts", by=["a", "b", "x", "y"], direction="backward", allow_exact_matches=False)
    result[merged["i"].to_numpy()] = merged["open"].fillna(False).to_numpy(bool)
    return result


def match(packets: pd.DataFrame, *, window_s: float = DEFAULT_WINDOW_S) -> pd.DataFrame:
    """Pair probes with replies.

    Input: the packets table (`analyzer.read`). Output: one row per probe group, ordered by first
    transmission, with columns probe_frame, ts_ns, src, dst, protocol, sport, dport (for ICMP queries:
    identifier and sequence), seq, flags, ip_proto, icmp_type, transmissions, reply_frame, reply_ts_ns,
    reply_kind, reply_flags, reply_icmp_type, reply_icmp_code, reply_ttl, reply_ip_id, reply_window,
    rtt_ns (NA when unanswered or discarded by Karn's rule), duplicates. Times in ns.
    ``attrs["unsolicited_replies"]``: answers (SYN/ACK, RST/ACK, ICMP errors and replies) that pair with
    no probe in the capture, or arrive after the reply window.
    """
    window_ns = int(window_s * 1e9)
    pk = packets
    n = len(pk)
    proto = _np(pk.ip_proto)
    frag = pk.fragment.to_numpy(bool)
    flags = _np(pk.tcp_flags, -1)
    src, dst = _np(pk.src), _np(pk.dst)
    sport, dport = _np(pk.sport, -1), _np(pk.dport, -1)
    seq, ack = _np(pk.seq), _np(pk.ack)
    plen = _np(pk.payload_len)
    ts = pk.ts_ns.to_numpy()
    itype, icode = _np(pk.icmp_type, -1), _np(pk.icmp_code, -1)
    ver = pk.ip_version.to_numpy()

    tcp = (proto == 6) & ~frag & (flags >= 0) & (sport >= 0)
    udp = (proto == 17) & ~frag & (sport >= 0)
    icmp = ((proto == 1) | (proto == 58)) & (itype >= 0)
    synack = tcp & ((flags & (SYN | ACK)) == (SYN | ACK))
    rst = tcp & ((flags & RST) != 0)
    tcp_probe = tcp & ~rst & ~synack & (((flags & SYN) != 0) | (plen == 0))
    tcp_probe &= ~_in_connection(pk, tcp, flags)
    udp_reply = _udp_replies(udp, src, dst, sport, dport, ts, window_ns)
    udp_probe = udp & ~udp_reply
    v4q = (proto == 1) & np.isin(itype, list(_ICMP4_REPLY))
    v6q = (proto == 58) & np.isin(itype, list(_ICMP6_REPLY))
    icmp_probe = icmp & (v4q | v6q)
    icmp_error = icmp & (((proto == 1) & np.isin(itype, (3, 4, 5, 11, 12))) | ((proto == 58) & np.isin(itype, (1, 2, 3, 4))))
    echo_reply = icmp & (((proto == 1) & np.isin(itype, list(_ICMP4_REPLY.values()))) | ((proto == 58) & (itype == 129)))

    # ---- probe transmissions and their groups
    probe_rows = np.flatnonzero(tcp_probe | udp_probe | icmp_probe)
    if not len(probe_rows):
        return _no_probes(pk, synack, rst, flags, icmp_error, echo_reply, udp_reply, window_s)
    icmp_id, icmp_seq = _np(pk.icmp_id), _np(pk.icmp_seq)
    r = probe_rows
    tx = pd.DataFrame({
        "row": r,
        "ts": ts[r],
        "p": proto[r],
        "a": src[r],
        "b": dst[r],
        "x": np.where(icmp_probe[r], icmp_id[r], sport[r]),
        "y": np.where(icmp_probe[r], icmp_seq[r], dport[r]),
        "seq": np.where(tcp_probe[r], seq[r], 0),
        "f": np.where(tcp_probe[r], flags[r], np.where(icmp_probe[r], itype[r], 0)),
    })
    tx = tx.sort_values(["p", "a", "b", "x", "y", "seq", "f", "ts"], kind="stable")
    ident = tx[["p", "a", "b", "x", "y", "seq", "f"]].to_numpy()
    tsv = tx["ts"].to_numpy()
    new_group = np.ones(len(tx), bool)
    if len(tx) > 1:
        same = (ident[1:] == ident[:-1]).all(axis=1)
        new_group[1:] = ~same | (tsv[1:] - tsv[:-1] > window_ns)
    tx["g"] = np.cumsum(new_group) - 1
    tx["nth"] = tx.groupby("g").cumcount() + 1
    groups = tx[new_group].set_index("g")
    n_tx = tx.groupby("g").size()

    # ---- keys each group can be answered on
    first = groups["row"].to_numpy()
    g_ids = groups.index.to_numpy()
    gp = proto[first]
    keys = []
    is_tcp_g = tcp_probe[first]
    if is_tcp_g.any():
        rows, gid = first[is_tcp_g], g_ids[is_tcp_g]
        f = flags[rows]
        nxt = (seq[rows] + plen[rows] + ((f & SYN) != 0) + ((f & FIN) != 0)) % (1 << 32)
        base = dict(a=src[rows], b=dst[rows], x=sport[rows], y=dport[rows], p=6)
        keys.append(pd.DataFrame(dict(g=gid, fam=_K_NEXTSEQ, s=nxt, **base)))
        keys.append(pd.DataFrame(dict(g=gid, fam=_K_SEQ, s=seq[rows], **base)))
        has_ack = (f & ACK) != 0
        keys.append(pd.DataFrame(dict(g=gid[has_ack], fam=_K_ACK, s=ack[rows][has_ack],
                                      **{k: (v[has_ack] if isinstance(v, np.ndarray) else v) for k, v in base.items()})))
    is_udp_g = udp_probe[first]
    if is_udp_g.any():
        rows, gid = first[is_udp_g], g_ids[is_udp_g]
        keys.append(pd.DataFrame(dict(g=gid, fam=_K_UDP, a=src[rows], b=dst[rows], x=sport[rows], y=dport[rows], p=17, s=0)))
    is_icmp_g = icmp_probe[first]
    if is_icmp_g.any():
        rows, gid = first[is_icmp_g], g_ids[is_icmp_g]
        want = np.array([(_ICMP4_REPLY if p == 1 else _ICMP6_REPLY).get(t, -1) for p, t in zip(gp[is_icmp_g], itype[rows])])
        keys.append(pd.DataFrame(dict(g=gid, fam=_K_ICMP, a=src[rows], b=dst[rows], x=icmp_id[rows], y=icmp_seq[rows],
                                      p=proto[rows], s=want)))
    probe_keys = pd.concat(keys, ignore_index=True) if keys else pd.DataFrame(columns=["g"] + _KEY)

    # ---- keys each reply candidate offers
    q_src, q_dst = _np(pk.q_src), _np(pk.q_dst)
    q_sport, q_dport, q_seq, q_proto = _np(pk.q_sport, -1), _np(pk.q_dport, -1), _np(pk.q_seq), _np(pk.q_proto, -1)
    rk = []
    sel = np.flatnonzero((synack | rst) & ((flags & ACK) != 0))
    rk.append(dict(r=sel, fam=_K_NEXTSEQ, a=dst[sel], b=src[sel], x=dport[sel], y=sport[sel], p=6, s=ack[sel]))
    sel = np.flatnonzero(rst & ((flags & ACK) == 0))
    rk.append(dict(r=sel, fam=_K_ACK, a=dst[sel], b=src[sel], x=dport[sel], y=sport[sel], p=6, s=seq[sel]))
    sel = np.flatnonzero(icmp_error & (q_proto == 6) & (q_sport >= 0))
    rk.append(dict(r=sel, fam=_K_SEQ, a=q_src[sel], b=q_dst[sel], x=q_sport[sel], y=q_dport[sel], p=6, s=q_seq[sel]))
    sel = np.flatnonzero(icmp_error & (q_proto == 17) & (q_sport >= 0))
    rk.append(dict(r=sel, fam=_K_UDP, a=q_src[sel], b=q_dst[sel], x=q_sport[sel], y=q_dport[sel], p=17, s=0))
    sel = np.flatnonzero(udp_reply)
    rk.append(dict(r=sel, fam=_K_UDP, a=dst[sel], b=src[sel], x=dport[sel], y=sport[sel], p=17, s=0))
    sel = np.flatnonzero(echo_reply)
    rk.append(dict(r=sel, fam=_K_ICMP, a=dst[sel], b=src[sel], x=icmp_id[sel], y=icmp_seq[sel], p=proto[sel], s=itype[sel]))
    reply_keys = pd.concat([pd.DataFrame(d) for d in rk], ignore_index=True)
    for c in _KEY:
        reply_keys[c] = reply_keys[c].astype(np.int64)
        probe_keys[c] = probe_keys[c].astype(np.int64)
    reply_keys["ts"] = ts[reply_keys["r"].to_numpy()]

    cand = reply_keys.merge(probe_keys, on=_KEY, how="inner")[["r", "g", "ts"]]
    # The latest transmission of the group at or before the reply: a reply never precedes its probe.
    cand = cand.sort_values("ts", kind="stable")
    txs = tx[["g", "ts", "nth"]].rename(columns={"ts": "tx_ts"}).sort_values("tx_ts", kind="stable")
    cand = pd.merge_asof(cand, txs, left_on="ts", right_on="tx_ts", by="g", direction="backward")
    cand = cand[cand["tx_ts"].notna() & (cand["ts"] - cand["tx_ts"] <= window_ns)]
    # A reply answers one probe: the candidate most recently sent (ties: the first group).
    cand = cand.sort_values(["r", "tx_ts", "g"], ascending=[True, False, True], kind="stable").drop_duplicates("r")
    cand = cand.sort_values(["g", "ts"], kind="stable")
    answer = cand.drop_duplicates("g")
    dups = cand.groupby("g").size() - 1

    out_index = groups.index
    ans = answer.set_index("g").reindex(out_index)
    reply_row = ans["r"].to_numpy(float)
    answered = ~np.isnan(reply_row)
    rr = np.where(answered, reply_row, 0).astype(np.int64)
    karn_ok = answered & (ans["nth"].to_numpy(float) == 1)
    reply_kind = np.full(len(out_index), -1, np.int64)
    rkinds = np.select(
        [synack[rr], rst[rr], icmp_error[rr], udp_reply[rr], echo_reply[rr]], [0, 1, 2, 3, 4], -1)
    reply_kind[answered] = rkinds[answered]
    g_first = groups["row"].to_numpy()
    protocol_code = np.select([tcp_probe[g_first], udp_probe[g_first]], [0, 1], 2)

    def reply_col(series: pd.Series) -> pd.api.extensions.ExtensionArray:
        values = series.to_numpy()[rr]
        return pd.array(np.where(answered, values, pd.NA), dtype=str(series.dtype))

    out = pd.DataFrame({
        "probe_frame": pk.frame.to_numpy()[g_first],
        "ts_ns": ts[g_first],
        "src": pk.src.iloc[g_first].to_numpy(),
        "dst": pk.dst.iloc[g_first].to_numpy(),
        "protocol": pd.Categorical.from_codes(protocol_code, PROTOCOLS),
        "ip_version": ver[g_first],
        "sport": pd.array(groups["x"].to_numpy(), dtype="UInt16"),
        "dport": pd.array(groups["y"].to_numpy(), dtype="UInt16"),
        "seq": pd.array(np.where(tcp_probe[g_first], seq[g_first], 0), dtype="UInt32").copy(),
        "flags": pd.array(np.where(tcp_probe[g_first], flags[g_first], 0), dtype="UInt16"),
        "icmp_type": pd.array(np.where(icmp_probe[g_first], itype[g_first], 0), dtype="UInt8"),
        "transmissions": n_tx.reindex(out_index).to_numpy(np.int64),
        "reply_frame": pd.array(np.where(answered, pk.frame.to_numpy()[rr], 0), dtype="Int64"),
        "reply_ts_ns": pd.array(np.where(answered, ts[rr], 0), dtype="Int64"),
        "reply_kind": pd.Categorical.from_codes(reply_kind, REPLY_KINDS),
        "reply_flags": pd.array(np.where(answered & tcp[rr], flags[rr], 0), dtype="UInt16"),
        "reply_icmp_type": pd.array(np.where(answered & icmp[rr], itype[rr], 0), dtype="UInt8"),
        "reply_icmp_code": pd.array(np.where(answered & icmp[rr], icode[rr], 0), dtype="UInt8"),
        "reply_ttl": reply_col(pk.ttl),
        "reply_ip_id": reply_col(pk.ip_id),
        "reply_window": reply_col(pk.window),
        "reply_ip_len": reply_col(pk.ip_len),
        "rtt_ns": pd.array(np.where(karn_ok, ts[rr] - ts[g_first], 0), dtype="Int64"),
        "duplicates": dups.reindex(out_index).fillna(0).to_numpy(np.int64),
    })
    for name, mask in (("seq", tcp_probe[g_first]), ("flags", tcp_probe[g_first]), ("icmp_type", icmp_probe[g_first]),
                       ("reply_frame", answered), ("reply_ts_ns", answered), ("rtt_ns", karn_ok),
                       ("reply_flags", answered & tcp[rr]), ("reply_icmp_type", answered & icmp[rr]),
                       ("reply_icmp_code", answered & icmp[rr])):
        out.loc[~mask, name] = pd.NA
    out = out.sort_values(["ts_ns", "probe_frame"], kind="stable").reset_index(drop=True)
    # Unsolicited: answers no probe claimed. Bare RSTs are left out: most tear down a SYN/ACK the
    # prober's own kernel did not expect (nmap's SYN scan), which answers no probe by design.
    answers = np.flatnonzero(synack | (rst & ((flags & ACK) != 0)) | icmp_error | echo_reply | udp_reply)
    out.attrs["unsolicited_replies"] = int(len(answers) - np.isin(answers, cand["r"].to_numpy()).sum())
    out.attrs["window_s"] = window_s
    return out


def _no_probes(pk: pd.DataFrame, synack: np.ndarray, rst: np.ndarray, flags: np.ndarray, icmp_error: np.ndarray,
               echo_reply: np.ndarray, udp_reply: np.ndarray, window_s: float) -> pd.DataFrame:
    """The probes table with no rows (a capture of replies only, or of nothing)."""
    # Matching a one-SYN table gives the empty probes table its exact columns and dtypes.
    out = match(_one_probe_table(), window_s=window_s).iloc[0:0].copy()
    answers = synack | (rst & ((flags & ACK) != 0)) | icmp_error | echo_reply | udp_reply
    out.attrs["unsolicited_replies"] = int(answers.sum())
    out.attrs["window_s"] = window_s
    return out


def _one_probe_table() -> pd.DataFrame:
    from .schema import PACKET_COLUMNS, column, frame_from_columns

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
                          "seen": np.ones(len(rows), bool)})
    merged = pd.merge_asof(left.sort_values("ts", kind="stable"), right.sort_values("ts", kind="stable"), on="ts",
                           by=["a", "b", "x", "y"], direction="backward", allow_exact_matches=False,
                           tolerance=window_ns)
    result[merged["i"].to_numpy()] = merged["seen"].fillna(False).to_numpy(bool)
    return result

