#!/usr/bin/env python3
"""The programs the forensic lab runs inside its namespaces (stdlib only; run as root by the lab).

    python3 tests/support/forensic_roles.py ROLE JSON

Each role takes one JSON argument (its plan), prints ``ready`` once its sockets are bound or its connections
made, and, where it has a result, prints it as one JSON line at the end. Randomness is drawn from the plan's
``seed``, so a run repeats what it sends (the kernels' own choices, ports and sequence numbers, stay theirs).

Roles:

``http``           an HTTP/1.0 server on ``port`` whose ``/`` is a small HTML page titled ``title``
``keepalive_server`` / ``keepalive_client``
                   long TCP sessions (keep-alives each way, a chatty session, a stream) begun before the capture
``p2p_peers`` / ``p2p_client``
                   one UDP port talking to many peers on random high ports, and TCP sessions to a dozen
``nbns``           a Windows-like NetBIOS name service: registrations and queries to the broadcast address,
                   answers to queries for its own name
``multicast``      SSDP, mDNS and LLMNR: queries to the multicast groups, answers from the hosts asked
``ping``           ICMP echo requests to addresses in turn, ``gap_s`` apart (no ``ping`` binary is needed)
``old_nmap``       an older nmap's raw SYN scan of several hosts (see `old_nmap`)
``wake``           one frame of the local experimental EtherType 0x88b5 to the broadcast MAC (wakes masscan)
"""

from __future__ import annotations

import collections
import json
import random
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for agent/

from agent.packet import checksum  # stdlib only, and importing it does nothing


def ready() -> None:
    print("ready", flush=True)


def on_schedule(events: Iterable[list]) -> Iterator[list]:
    """Each event [delay s, ...] (in time order) once its delay since the first call has passed."""
    t0 = time.monotonic()
    for event in events:
        time.sleep(max(0.0, t0 + event[0] - time.monotonic()))
        yield event


# ------------------------------------------------------------------------------------------------ http


def http_page(plan: dict) -> None:
    page = (f"<!DOCTYPE html>\n<html><head><title>{plan['title']}</title></head>\n"
            f"<body><h1>{plan['title']}</h1><p>A page of the synlens forensic lab.</p></body></html>\n").encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] in ("/", "/index.html"):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
            else:
                self.send_error(404)

        def do_HEAD(self) -> None:
            self.send_response(200 if self.path == "/" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    srv = Server(("", plan["port"]), Handler)
    ready()
    srv.serve_forever()


# ------------------------------------------------------------------------------------------------ keep-alive


def _keepalive(sock: socket.socket, idle_s: int = 1) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, idle_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 30)


def keepalive_server(plan: dict) -> None:
    """Ports: ``quiet`` (no keep-alives: answers each request with twice its bytes), ``probing`` (the same,
    with keep-alives every second from this side), ``stream`` (sends ``stream_bytes`` every ``stream_gap_s``
    for ever)."""
    rng = random.Random(plan["seed"])
    record = bytes(rng.getrandbits(8) for _ in range(4096))

    def serve(conn: socket.socket, kind: str) -> None:
        if kind == "probing":
            _keepalive(conn)
        try:
            if kind == "stream":
                while True:
                    conn.sendall(record[: plan["stream_bytes"]])
                    time.sleep(plan["stream_gap_s"])
            while data := conn.recv(4096):
                conn.sendall(record[: 2 * len(data)])  # an answer twice the request's size
        except OSError:
            pass
        conn.close()

    def listen(port: int, kind: str) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("", port))
        s.listen(16)
        while True:
            conn, _ = s.accept()
            threading.Thread(target=serve, args=(conn, kind), daemon=True).start()

    for kind, port in plan["ports"].items():
        threading.Thread(target=listen, args=(port, kind), daemon=True).start()
    time.sleep(0.2)
    ready()
    threading.Event().wait()


def _drain(sock: socket.socket) -> None:
    while sock.recv(65536):
        pass


def keepalive_client(plan: dict) -> None:
    """Opens every session of ``sessions`` ([name, port kind, client keep-alive?]) and makes one exchange
    on each, prints ready (the capture starts then), then: the ``chatty`` session sends a request every
    ``chat_gap_s`` and is closed after ``close_after_s``; the others stay idle (keep-alives) or take the
    stream. Runs until killed."""
    rng = random.Random(plan["seed"])
    socks = {}
    for name, kind, client_keepalive in plan["sessions"]:
        s = socket.create_connection((plan["server"], plan["ports"][kind]), timeout=5)
        if client_keepalive:
            _keepalive(s)
        if kind != "stream":
            s.sendall(bytes(rng.getrandbits(8) for _ in range(plan["hello_bytes"])))
            s.recv(65536)
        socks[name] = s
    for (name, kind, _) in plan["sessions"]:
        if kind == "stream":  # read the stream as it comes, so that the client's ACKs keep it going
            threading.Thread(target=_drain, args=(socks[name],), daemon=True).start()
    time.sleep(1.5)  # the hello exchanges' last ACKs go out before the capture starts
    ready()
    started = time.monotonic()
    chatty = socks[plan["chatty"]]
    chatty.settimeout(5)
    while time.monotonic() - started < plan["close_after_s"]:
        time.sleep(plan["chat_gap_s"])
        chatty.sendall(bytes(rng.getrandbits(8) for _ in range(plan["chat_bytes"])))
        chatty.recv(65536)
    chatty.close()
    threading.Event().wait()


# ------------------------------------------------------------------------------------------------ p2p

GO = b"\x17\x03\x01\x00"  # the first four bytes of the client's first datagram (any payload would do)


def p2p_peers(plan: dict) -> None:
    """One UDP socket per answering peer (address, port); answers every datagram with a payload of
    ``answer_len`` bytes; TCP listeners answer every read. ``inbound``: [delay s, peer address, peer port]
    datagrams a peer sends the client first (the client answers)."""
    rng = random.Random(plan["seed"])
    sel_socks = []
    for addr, port, answer_len in plan["udp"]:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((addr, port))
        sel_socks.append((s, answer_len))
    by_addr = {s.getsockname(): s for s, _ in sel_socks}

    def tcp_peer(addr: str, port: int, answer_len: int) -> None:
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind((addr, port))
        lst.listen(4)
        while True:
            conn, _ = lst.accept()
            try:
                while data := conn.recv(4096):
                    conn.sendall(bytes((b * 7 + 3) % 256 for b in data[:64]) * (answer_len // 64 + 1))
            except OSError:
                pass
            conn.close()

    for addr, port, answer_len in plan["tcp"]:
        threading.Thread(target=tcp_peer, args=(addr, port, answer_len), daemon=True).start()

    def inbound() -> None:
        for _, addr, port, size in on_schedule(plan["inbound"]):
            by_addr[(addr, port)].sendto(bytes(rng.getrandbits(8) for _ in range(size)), tuple(plan["client"]))

    ready()
    started = False
    answers = dict(sel_socks)
    while True:
        readable, _, _ = select.select(list(answers), [], [], 0.5)
        for s in readable:
            data, peer = s.recvfrom(4096)
            if not started and data.startswith(GO):  # the client's first datagram: the peers' own sends begin
                started = True
                threading.Thread(target=inbound, daemon=True).start()
            s.sendto(bytes(rng.getrandbits(8) for _ in range(answers[s])), peer)


def p2p_client(plan: dict) -> None:
    """From one UDP port: ``udp`` [delay s, peer address, port, size] datagrams in time order (answered by
    most peers); answers whatever a peer sends first; ``tcp`` [delay s, address, port, [request sizes]]
    sessions, one request and answer per size, then a close. The first datagram begins with GO, which starts
    the peers' own sends."""
    rng = random.Random(plan["seed"])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", plan["port"]))
    contacted: set[tuple[str, int]] = set()
    done = threading.Event()

    def receive() -> None:
        while not done.is_set():
            readable, _, _ = select.select([s], [], [], 0.2)
            if readable:
                data, peer = s.recvfrom(4096)
                if peer not in contacted:  # a peer that spoke first: answer it once
                    contacted.add(peer)
                    s.sendto(bytes(rng.getrandbits(8) for _ in range(40 + len(data) % 50)), peer)

    def tcp_session(addr: str, port: int, sizes: list[int]) -> None:
        try:
            with socket.create_connection((addr, port), timeout=3) as c:
                for size in sizes:
                    c.sendall(bytes(rng.getrandbits(8) for _ in range(size)))
                    c.recv(65536)
                    time.sleep(0.3)
        except OSError:
            pass

    ready()
    threading.Thread(target=receive, daemon=True).start()
    events = [(d, "udp", (a, p, n)) for d, a, p, n in plan["udp"]]
    events += [(d, "tcp", (a, p, sizes)) for d, a, p, sizes in plan["tcp"]]
    threads = []
    for _, kind, (addr, port, arg) in on_schedule(sorted(events, key=lambda e: e[0])):
        if kind == "udp":
            contacted.add((addr, port))
            payload = bytes(rng.getrandbits(8) for _ in range(arg))
            s.sendto(GO + payload[len(GO):] if not threads else payload, (addr, port))
            threads.append(None)
        else:
            t = threading.Thread(target=tcp_session, args=(addr, port, arg), daemon=True)
            t.start()
            threads.append(t)
    time.sleep(plan["linger_s"])
    done.set()
    for t in threads:
        if t is not None:
            t.join(5)


# ------------------------------------------------------------------------------------------------ NetBIOS


def nb_encode(name: str, suffix: int) -> bytes:
    """First-level encoding of a 16-byte NetBIOS name (RFC 1001 14.1): 32 letters A-P, length-prefixed."""
    raw = name.upper().ljust(15)[:15].encode() + bytes([suffix])
    return b"\x20" + bytes(c for b in raw for c in (0x41 + (b >> 4), 0x41 + (b & 0xF))) + b"\0"


def nbns_packet(tid: int, flags: int, name: str, suffix: int, answer: str | None = None,
                additional: str | None = None) -> bytes:
    """A name query (flags 0x0110), registration (0x2910, with the address as an additional record) or
    positive query response (0x8500, with the address as the answer) of RFC 1002."""
    counts = (0 if answer else 1, 1 if answer else 0, 0, 1 if additional else 0)
    head = struct.pack("!HHHHHH", tid, flags, *counts)
    qname = nb_encode(name, suffix)
    if answer:
        return head + qname + struct.pack("!HHIHH", 0x20, 1, 300000, 6, 0) + socket.inet_aton(answer)
    body = head + qname + struct.pack("!HH", 0x20, 1)
    if additional:
        body += b"\xc0\x0c" + struct.pack("!HHIHH", 0x20, 1, 300000, 6, 0) + socket.inet_aton(additional)
    return body


def nb_decode(data: bytes) -> tuple[str, int]:
    enc = data[13:45]
    raw = bytes(((enc[2 * i] - 0x41) << 4) | (enc[2 * i + 1] - 0x41) for i in range(16))
    return raw[:15].decode(errors="replace").strip(), raw[15]


def nbns(plan: dict) -> None:
    """Binds 137 (and answers queries for ``name``); runs ``schedule`` [delay s, "register"|"query", name]:
    a registration or query is broadcast up to three times, 0.75 s apart (as Windows does), until
    answered."""
    rng = random.Random(plan["seed"])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.bind(("", 137))
    answered: set[int] = set()
    own = plan["name"].upper()

    def listen() -> None:
        while True:
            data, peer = s.recvfrom(2048)
            if len(data) < 50:
                continue
            tid, flags = struct.unpack("!HH", data[:4])
            if flags & 0x8000:
                answered.add(tid)
            elif (flags & 0x7800) == 0 and nb_decode(data) == (own, 0x00) and peer[0] != plan["address"]:
                s.sendto(nbns_packet(tid, 0x8500, own, 0x00, answer=plan["address"]), peer)

    threading.Thread(target=listen, daemon=True).start()
    ready()
    for _, what, name in on_schedule(plan["schedule"]):
        tid = rng.getrandbits(16)
        for _ in range(3):
            if what == "register":
                pkt = nbns_packet(tid, 0x2910, name, 0x00, additional=plan["address"])
            else:
                pkt = nbns_packet(tid, 0x0110, name, 0x00)
            s.sendto(pkt, (plan["broadcast"], 137))
            time.sleep(0.75)
            if tid in answered:
                break
    time.sleep(1.0)


# ------------------------------------------------------------------------------------------------ multicast

SSDP_GROUP, MDNS_GROUP, LLMNR_GROUP = ("239.255.255.250", 1900), ("224.0.0.251", 5353), ("224.0.0.252", 5355)


def dns_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"


def dns_query(tid: int, name: str, qtype: int, flags: int = 0) -> bytes:
    return struct.pack("!HHHHHH", tid, flags, 1, 0, 0, 0) + dns_name(name) + struct.pack("!HH", qtype, 1)


def dns_a_answer(tid: int, name: str, address: str, flags: int, ttl: int, with_question: bool) -> bytes:
    head = struct.pack("!HHHHHH", tid, flags, 1 if with_question else 0, 1, 0, 0)
    question = dns_name(name) + struct.pack("!HH", 1, 1) if with_question else b""
    return head + question + dns_name(name) + struct.pack("!HHIH", 1, 1, ttl, 4) + socket.inet_aton(address)


def _joined(group: tuple[str, int], address: str, ttl: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", group[1]))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group[0]) + socket.inet_aton(address))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(address))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    return s


def multicast(plan: dict) -> None:
    """Joins SSDP, mDNS and LLMNR as host ``name``; answers an M-SEARCH (unicast HTTP 200), an mDNS query for
    ``name``.local (multicast answer), an LLMNR query for ``name`` (unicast answer); runs ``schedule`` [delay s,
    "msearch"|"notify"|"mdns"|"llmnr", argument]: queries and announcements of its own."""
    rng = random.Random(plan["seed"])
    me, name = plan["address"], plan["name"]
    ssdp, mdns, llmnr = _joined(SSDP_GROUP, me, 2), _joined(MDNS_GROUP, me, 255), _joined(LLMNR_GROUP, me, 1)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # queries from an ephemeral port
    client.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
    client.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(me))
    client.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    client.bind((me, 0))
    usn = f"uuid:{random.Random(name).getrandbits(128):032x}"

    def answer(sock: socket.socket) -> None:
        data, peer = sock.recvfrom(4096)
        if peer[0] == me:
            return
        if sock is ssdp and data.startswith(b"M-SEARCH") and plan.get("ssdp_server"):
            sock.sendto((f"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\nEXT:\r\n"
                         f"LOCATION: http://{me}:49152/description.xml\r\nSERVER: Linux/6.1 UPnP/1.0 synlens/1.0\r\n"
                         f"ST: upnp:rootdevice\r\nUSN: {usn}::upnp:rootdevice\r\n\r\n").encode(), peer)
        elif sock is mdns and len(data) > 12 and not data[2] & 0x80 and dns_name(f"{name}.local") in data:
            tid = struct.unpack("!H", data[:2])[0]
            mdns.sendto(dns_a_answer(tid, f"{name}.local", me, 0x8400, 120, False), MDNS_GROUP)
        elif sock is llmnr and len(data) > 12 and not data[2] & 0x80 and dns_name(name) in data:
            tid = struct.unpack("!H", data[:2])[0]
            llmnr.sendto(dns_a_answer(tid, name, me, 0x8000, 30, True), peer)

    def listen() -> None:
        while True:
            readable, _, _ = select.select([ssdp, mdns, llmnr, client], [], [])
            for sock in readable:
                if sock is client:
                    sock.recvfrom(4096)  # answers to our own queries: read and dropped
                else:
                    answer(sock)

    threading.Thread(target=listen, daemon=True).start()
    ready()
    for _, what, arg in on_schedule(plan["schedule"]):
        if what == "msearch":
            client.sendto((f"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n"
                           f"MX: 1\r\nST: {arg}\r\n\r\n").encode(), SSDP_GROUP)
        elif what == "notify":
            ssdp.sendto((f"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nCACHE-CONTROL: max-age=1800\r\n"
                         f"LOCATION: http://{me}:49152/description.xml\r\nNT: upnp:rootdevice\r\n"
                         f"NTS: ssdp:alive\r\nUSN: {usn}::upnp:rootdevice\r\n\r\n").encode(), SSDP_GROUP)
        elif what == "mdns":
            mdns.sendto(dns_query(0, arg, 12 if arg.startswith("_") else 1), MDNS_GROUP)  # PTR or A
        elif what == "llmnr":
            client.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            client.sendto(dns_query(rng.getrandbits(16), arg, 1), LLMNR_GROUP)
            client.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
    time.sleep(1.0)


# ------------------------------------------------------------------------------------------------ ping


def ping(plan: dict) -> None:
    """``count`` ICMP echo requests to each address of ``targets`` in turn, ``gap_s`` between addresses."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(1.0)
    ident = plan["seed"] & 0xFFFF
    ready()
    for i, addr in enumerate(plan["targets"]):
        for seq in range(plan["count"]):
            body = struct.pack("!d", time.time()) + bytes(range(48))
            head = struct.pack("!BBHHH", 8, 0, 0, ident, i * 16 + seq + 1)
            s.sendto(struct.pack("!BBHHH", 8, 0, checksum(head + body), ident, i * 16 + seq + 1) + body, (addr, 0))
            try:
                s.recv(2048)
            except OSError:
                pass
            time.sleep(1.0)
        time.sleep(max(0.0, plan["gap_s"] - plan["count"]))


# ------------------------------------------------------------------------------------------------ old nmap

OLD_NMAP_WINDOWS = (1024, 2048, 3072, 4096)
OLD_NMAP_TTL = (37, 59)
TCP_SYN, TCP_RST, TCP_ACK = 0x02, 0x04, 0x10
ICMP_FILTERED_CODES = {0, 1, 2, 3, 9, 10, 13}  # nmap: these unreachables mean "filtered"


def _syn(src: str, dst: str, sport: int, dport: int, seq: int, ttl: int, ip_id: int, window: int) -> bytes:
    options = struct.pack("!BBH", 2, 4, 1460)  # MSS 1460, nothing else
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 6 << 4, TCP_SYN, window, 0, 0) + options
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), ip_id, 0, ttl, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip + tcp


def old_nmap(plan: dict) -> None:
    """An older nmap's raw SYN scan (the one in Practical Packet Analysis' synscan.pcapng): every probe has
    its own window (1024/2048/3072/4096), TTL (37-59) and IP ID, an MSS 1460 option only; try N comes from
    source port ``base_port`` + N with sequence number seq0 + N * 65537; hosts are probed in parallel, ports
    in random order, ``cwnd`` probes outstanding (growing by one per answer), an unanswered probe retried
    after ``rto_s``, up to ``tries`` tries. A port's state is nmap's: open on a SYN/ACK to any try, closed on
    a RST, filtered on an ICMP unreachable (codes 0-3, 9, 10, 13) or silence after every try.

    Plan: source, targets {address: [ports]}, seed, base_port, tries, rto_s, cwnd, max_cwnd. Prints
    {"probes": [...], "ports": {address: {port: {state, reason, tries, decided_by_try}}}}."""
    rng = random.Random(plan["seed"])
    src, base = plan["source"], plan["base_port"]
    seq0 = rng.getrandbits(32)
    per_host = {t: rng.sample(ports, len(ports)) for t, ports in plan["targets"].items()}
    queue = collections.deque()
    for i in range(max(map(len, per_host.values()))):
        queue.extend((t, ports[i]) for t, ports in per_host.items() if i < len(ports))
    tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    rx_tcp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    rx_icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    verdict: dict[tuple[str, int], dict] = {}
    tries_made: dict[tuple[str, int], int] = collections.Counter()
    outstanding: dict[tuple[str, int], float] = {}
    retries: collections.deque = collections.deque()
    probes = []
    cwnd = plan["cwnd"]
    ready()

    def send(key: tuple[str, int]) -> None:
        target, port = key
        tryno = tries_made[key]
        sport, seq = base + tryno, (seq0 + tryno * 65537) % (1 << 32)
        ttl, ip_id, window = rng.randint(*OLD_NMAP_TTL), rng.getrandbits(16) or 1, rng.choice(OLD_NMAP_WINDOWS)
        tx.sendto(_syn(src, target, sport, port, seq, ttl, ip_id, window), (target, 0))
        probes.append({"t": time.time(), "target": target, "port": port, "sport": sport, "try": tryno,
                       "ttl": ttl, "ip_id": ip_id, "window": window})
        tries_made[key] += 1
        outstanding[key] = time.monotonic()

    def decide(key: tuple[str, int], state: str, reason: str, tryno: int | None) -> None:
        nonlocal cwnd
        if key in verdict:
            return
        verdict[key] = {"state": state, "reason": reason, "tries": tries_made[key], "decided_by_try": tryno}
        outstanding.pop(key, None)
        if tryno is not None:
            cwnd = min(cwnd + 1, plan["max_cwnd"])

    def receive(timeout: float) -> None:
        readable, _, _ = select.select([rx_tcp, rx_icmp], [], [], timeout)
        for sock in readable:
            pkt = sock.recv(2048)
            ihl = (pkt[0] & 0xF) * 4
            peer = socket.inet_ntoa(pkt[12:16])
            if sock is rx_tcp:
                sport, dport = struct.unpack("!HH", pkt[ihl:ihl + 4])
                flags = pkt[ihl + 13]
                key = (peer, sport)
                if key not in tries_made or not base <= dport < base + plan["tries"]:
                    continue
                if flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK:
                    decide(key, "open", "syn-ack", dport - base)
                elif flags & TCP_RST:
                    decide(key, "closed", "reset", dport - base)
            else:
                icmp_type, code = pkt[ihl], pkt[ihl + 1]
                quoted = pkt[ihl + 8:]
                if icmp_type != 3 or code not in ICMP_FILTERED_CODES or len(quoted) < 24:
                    continue
                qihl = (quoted[0] & 0xF) * 4
                qdst = socket.inet_ntoa(quoted[16:20])
                qsport, qdport = struct.unpack("!HH", quoted[qihl:qihl + 4])
                key = (qdst, qdport)
                if key in tries_made and base <= qsport < base + plan["tries"]:
                    reason = "admin-prohibited" if code == 13 else f"icmp-unreach-code-{code}"
                    decide(key, "filtered", reason, qsport - base)

    while queue or retries or outstanding:
        now = time.monotonic()
        for key, sent in list(outstanding.items()):
            if now - sent >= plan["rto_s"]:
                del outstanding[key]
                if tries_made[key] < plan["tries"]:
                    retries.append(key)
                else:
                    decide(key, "filtered", "no-response", None)
        while len(outstanding) < cwnd and (retries or queue):
            send(retries.popleft() if retries else queue.popleft())
            time.sleep(0.00005)
        receive(0.01)
    time.sleep(0.2)
    ports: dict[str, dict[str, dict]] = {}
    for (target, port), v in sorted(verdict.items()):
        ports.setdefault(target, {})[str(port)] = v
    print(json.dumps({"probes": probes, "ports": ports, "seq0": seq0}), flush=True)


# ------------------------------------------------------------------------------------------------ wake


def wake(plan: dict) -> None:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((plan["iface"], 0))
    s.send(b"\xff" * 6 + bytes.fromhex(plan["mac"].replace(":", "")) + b"\x88\xb5" + bytes(46))


ROLES = {"http": http_page} | {f.__name__: f for f in (keepalive_server, keepalive_client, p2p_peers, p2p_client, nbns,
                                  multicast, ping, old_nmap, wake)}

if __name__ == "__main__":
    ROLES[sys.argv[1]](json.loads(sys.argv[2]))
