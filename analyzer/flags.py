"""TCP flags as an IntFlag, and their usual short text (tcpdump/nmap letters)."""

from __future__ import annotations

import enum


class TCPFlag(enum.IntFlag):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80
    NS = 0x100


FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, NS = (int(f) for f in TCPFlag)

# nmap's --scanflags letters, in the order nmap and tcpdump print them
_LETTERS = ((SYN, "S"), (ACK, "A"), (FIN, "F"), (RST, "R"), (PSH, "P"), (URG, "U"), (ECE, "E"), (CWR, "C"), (NS, "N"))


def flag_text(value: int) -> str:
    """Flags as nmap letters, e.g. 0x12 → "SA", 0 → "" (a NULL probe)."""
    return "".join(letter for bit, letter in _LETTERS if value & bit)
