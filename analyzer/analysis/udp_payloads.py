"""The payloads UDP scanners send, by length: a datagram to a port that carries what a scanner would send there.

A UDP scan sends most ports an empty datagram; to ports whose service ignores an empty one it sends a
protocol payload (a DNS status request to 53, an SNMP get to 161, an ONC RPC call to 32768-65535, …).
nmap's table (`nmap-payloads`) is the reference: masscan and unicornscan carry payloads for the same
well-known services. Applications, by contrast, send their own messages to their own ports. The lengths
below are nmap 7.93's (`/usr/share/nmap/nmap-payloads`, one length per payload listed for the port);
`tests/test_scan_rules.py` checks them against the nmap installed, where one is.
"""

from __future__ import annotations

import numpy as np

# port or "first-last" → the lengths of nmap's payloads for it
NMAP_PAYLOAD_LENGTHS: dict[str, tuple[int, ...]] = {
    "7": (4,), "53": (12, 30), "67": (244,), "69": (12, 19), "80": (14,), "111": (40,), "123": (48,), "135": (72,),
    "137": (50,), "161": (33, 60), "177": (7,), "260": (33, 60), "389": (51,), "427": (54,), "443": (67,),
    "500": (192, 204), "520": (24,), "623": (12, 23), "626": (30,), "853": (67,), "1025-1199": (72,),
    "1194": (13, 14), "1604": (30,), "1645": (20,), "1701": (60,), "1812": (20,), "1900": (94,), "2049": (40,),
    "2123": (12,), "2152": (12,), "2302": (21,), "3283": (5,), "3386": (8,), "3391": (67,), "3401": (33, 60),
    "3478": (20,), "3784": (36,), "4045": (40,), "4433": (67,), "4500": (204,), "4665": (2,), "4666": (2,),
    "4672": (2,), "4740": (67,), "5349": (67,), "5351": (2,), "5353": (12, 30, 46), "5632": (2,), "5683": (21,),
    "5684": (67,), "5868": (67,), "6429": (2,), "6481": (12,), "6514": (67,), "6636": (67,), "7777": (5,),
    "8232": (67,), "8767": (180,), "9987": (34, 162), "10001": (4,), "10080": (54,), "10161": (67,),
    "10162": (67,), "11211": (17,), "12346": (67,), "12446": (67,), "12546": (67,), "12646": (67,),
    "12746": (67,), "12846": (67,), "12946": (67,), "13046": (67,), "17185": (64,), "26000-26004": (13,),
    "26198": (12, 30), "27015-27030": (25,), "27444": (11,), "27910-27914": (10,), "27960-27964": (13,),
    "30720-30724": (13,), "31337": (19,), "32768-65535": (40,), "34555": (10,), "44400": (13,), "48899": (24,),
    "64738": (12,),
}


def _table() -> tuple[np.ndarray, np.ndarray]:
    """(table, lengths): the distinct payload lengths ascending, and a (65536, len(lengths)) boolean table whose
    row p, column k says whether a payload of lengths[k] goes to port p."""
    lengths = sorted({n for ns in NMAP_PAYLOAD_LENGTHS.values() for n in ns})
    table = np.zeros((65536, len(lengths)), bool)
    for ports, ns in NMAP_PAYLOAD_LENGTHS.items():
        first, _, last = ports.partition("-")
        for n in ns:
            table[int(first):int(last or first) + 1, lengths.index(n)] = True
    return table, np.array(lengths)


_TABLE: tuple[np.ndarray, np.ndarray] | None = None


def scanner_payload(port: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Whether each datagram (destination port, payload length) is empty or carries a payload of the length a
    UDP scanner sends to that port."""
    global _TABLE
    if _TABLE is None:
        _TABLE = _table()
    table, lengths = _TABLE
    column = np.searchsorted(lengths, length)
    known = (column < len(lengths)) & (lengths[np.minimum(column, len(lengths) - 1)] == length)
    port = np.clip(port, 0, 65535)
    return (length == 0) | (known & table[port, np.minimum(column, len(lengths) - 1)])
