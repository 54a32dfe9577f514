#!/usr/bin/python3
"""Hostile underlay traffic for vnic's integration tests (hostile_test.go).

Runs in the peer namespace and sends, over a raw IPPROTO_ESP socket, to
vnic's underlay address, bounded bursts of bad ESP packets, each kind of
which vnic must drop and count under its own name. The ESP is built by hand
with python3-cryptography's AESGCM (RFC 4106: nonce = salt || IV, AAD =
SPI || sequence number, 16-byte ICV), so that a packet can be correct in
every respect but one.

The SAs (tunnel mode, AES-GCM-128, no ESN):
  --spi/--key          the live SA that carries the ping replies to vnic
  --inj-spi/--inj-key  a second inbound SA installed only for this script;
                       the kinds that pass the integrity check (and so move
                       the replay window) use it, so that the live SA's
                       window is left where the pinging peer has it.

Kinds (N each, --n):
  unknown   an SPI no SA has                     -> XfrmInNoStates
  badicv    live SPI, seq above the window, last ICV byte flipped
                                                 -> XfrmInStateProtoError,
                                                    CRYPTO_TUNNEL_ESP_AUTH_FAILED
  replayold live SPI, a correct packet with an old number (1..N, which the
            pinging peer has already used)       -> XfrmInStateSeqError
  replaydup injection SA: a correct dummy packet (next header 59) sent
            twice: the first copy is dropped as a dummy (VnicInDummy), the
            second as a replay                   -> XfrmInStateSeqError
  truncated live SPI, ESP shorter than header + IV + trailer + ICV (half of
            them shorter than the 8-byte ESP header)
                                                 -> XfrmInHdrError
  badpad    injection SA, correct ICV over a trailer whose pad bytes are
            not 1, 2, 3, ...                     -> XfrmInStateProtoError
  selector  injection SA, correct packet whose inner source (10.9.9.9) is
            outside the SA's selectors          -> XfrmInTmplMismatch
and in UDP to port 4500 (RFC 3948; from an ephemeral port, since the
peer's own daemon holds 4500):
  udp_unknown   an SPI no SA has                 -> XfrmInNoStates
  udp_encap     live SPI, a correct packet with a new number, but the SA
                is raw ESP                       -> XfrmInStateMismatch
  udp_truncated 2 or 3 bytes: not a keepalive, not an ESP header
                                                 -> XfrmInHdrError

With --kinds (a comma-separated list, or "all"), these kinds too:
  random        raw ESP: 8 to 1400 random bytes (the SPI they start with
                is none of vnic's)               -> XfrmInNoStates
  farold        injection SA, a correct packet numbered far below its
                window (1, 2, ...)               -> XfrmInStateSeqError
  replaycap     a real packet vnic's peer sent on the live SA, captured on
                --capture-dev before the burst and sent again in it
                                                 -> XfrmInStateSeqError
  oversized     live SPI, bad ICV, ~65000 bytes: the kernel fragments it
                and reassembles it before vnic's raw socket reads it
                                                 -> XfrmInStateProtoError,
                                                    CRYPTO_TUNNEL_ESP_AUTH_FAILED
  oversized_sel injection SA, correct ~65000-byte packet whose inner source
                is 10.9.9.9                      -> XfrmInTmplMismatch
  udp_oversized a ~65000-byte UDP datagram, an SPI no SA has
                                                 -> XfrmInNoStates
  udp_garbage   8 to 1400 random bytes in UDP (not starting with 4 zero
                bytes, nor with one of vnic's SPIs)
                                                 -> XfrmInNoStates
  ike           the non-ESP marker (4 zero bytes) and random bytes
                                                 -> VnicInIkeDropped
  keepalive     one 0xFF byte (RFC 3948 NAT keepalive)
                                                 -> VnicInNatKeepalive
With --interleave the kinds take turns (one packet of each, N rounds)
instead of coming one kind after the other, so that a burst of --n
packets per kind is spread over the whole attack.

Every inner packet is an ICMP echo request to vnic's inner address carrying
the payload MARK, so that a capture can tell whether one got through.
Prints one JSON line: how many packets of each kind were sent (replaydup
counts pairs).
"""
import argparse
import json
import os
import random
import socket
import struct
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from netutil import int0, csum

MARK = b"VNIC-INJECTED-PACKET"


def echo_request(src, dst, ident, seq, size=0):
    """An IPv4 ICMP echo request carrying MARK (and zeros up to size bytes
    of IP packet, if size is larger)."""
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + MARK
    icmp += bytes(max(0, size - 20 - len(icmp)))
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), ident, 0, 64, 1, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + icmp


def esp_gcm(spi, seq, keysalt, payload, nh, pad=None, tamper_icv=False):
    """An ESP packet (RFC 4303 + RFC 4106). pad, if given, replaces the
    correct pad bytes (same length, so the pad length byte is right)."""
    key, salt = keysalt[:-4], keysalt[-4:]
    n = (-(len(payload) + 2)) % 4
    if pad is None:
        padding = bytes(range(1, n + 1))
    else:
        if n == 0:  # make room for bad bytes: 4 more
            n = 4
        padding = bytes(pad(i) for i in range(n))
    plain = payload + padding + bytes([n, nh])
    iv = os.urandom(8)
    hdr = struct.pack("!II", spi, seq)
    ct = AESGCM(key).encrypt(salt + iv, plain, hdr)
    if tamper_icv:
        ct = ct[:-1] + bytes([ct[-1] ^ 0x5A])
    return hdr + iv + ct


OLD_KINDS = ("unknown", "badicv", "replayold", "replaydup", "truncated", "badpad", "selector",
             "udp_unknown", "udp_encap", "udp_truncated")
# replaydup first: its accepted packet lifts the injection SA's window
# far above 1 before farold sends numbers from 1 up.
ALL_KINDS = ("replaydup",) + tuple(k for k in OLD_KINDS if k != "replaydup") + (
    "random", "farold", "replaycap", "oversized", "oversized_sel", "udp_oversized",
    "udp_garbage", "ike", "keepalive")

# The size of the oversized packets on the wire (IPv4 total length, or the
# UDP payload): far above any MTU, below the 65535 that IPv4 allows.
OVERSIZE = 65000


def capture(dev, src, dst, spi, n, timeout):
    """The first n ESP packets that this namespace sends from src to dst on
    dev with SPI spi, without their IPv4 header (as the raw socket sends)."""
    # Only ETH_P_ALL sockets see outgoing packets.
    ETH_P_ALL, ETH_P_IP, PACKET_OUTGOING = 0x0003, 0x0800, 4
    c = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    c.bind((dev, ETH_P_ALL))
    c.settimeout(0.5)
    want_src, want_dst = socket.inet_aton(src), socket.inet_aton(dst)
    got = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < n and time.monotonic() < deadline:
            try:
                pkt, addr = c.recvfrom(65535)
            except socket.timeout:
                continue
            if addr[1] != ETH_P_IP or addr[2] != PACKET_OUTGOING or len(pkt) < 20 or pkt[0] >> 4 != 4 or pkt[9] != 50:
                continue
            ihl = (pkt[0] & 0x0F) * 4
            if pkt[12:16] != want_src or pkt[16:20] != want_dst or len(pkt) < ihl + 8:
                continue
            if struct.unpack("!I", pkt[ihl:ihl + 4])[0] == spi:
                got.append(pkt[ihl:])  # the ESP packet, for the raw socket
    finally:
        c.close()
    return got


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--src", required=True, help="this end's underlay address (the SA's source)")
    p.add_argument("--dst", required=True, help="vnic's underlay address")
    p.add_argument("--inner-src", default="10.7.0.2")
    p.add_argument("--inner-dst", default="10.7.0.1")
    p.add_argument("--spi", type=int0, required=True)
    p.add_argument("--key", required=True, help="hex key||salt of the live SA")
    p.add_argument("--inj-spi", type=int0, required=True)
    p.add_argument("--inj-key", required=True, help="hex key||salt of the injection SA")
    p.add_argument("--unknown-spi", type=int0, default=0x0BAD0000)
    p.add_argument("--seq-base", type=int0, default=1000000)
    p.add_argument("--n", type=int, default=5, help="packets of each kind")
    p.add_argument("--gap", type=float, default=0.002, help="seconds between packets")
    p.add_argument("--udp-port", type=int, default=4500)
    p.add_argument("--kinds", default=",".join(OLD_KINDS), help='comma-separated kinds, or "all"')
    p.add_argument("--interleave", action="store_true", help="one packet of each kind per round")
    p.add_argument("--capture-dev", help="the interface replaycap captures the live SA's packets on")
    p.add_argument("--capture-timeout", type=float, default=20.0)
    args = p.parse_args()

    kinds = ALL_KINDS if args.kinds == "all" else tuple(args.kinds.split(","))
    for k in kinds:
        if k not in ALL_KINDS:
            p.error("unknown kind %r" % k)
    key, inj_key = bytes.fromhex(args.key), bytes.fromhex(args.inj_key)
    ours = {args.spi, args.inj_spi}

    # Before anything is sent: the real packets to replay.
    captured = []
    if "replaycap" in kinds:
        if not args.capture_dev:
            p.error("replaycap needs --capture-dev")
        captured = capture(args.capture_dev, args.src, args.dst, args.spi, args.n, args.capture_timeout)
        time.sleep(0.2)  # let vnic take the originals before their copies come

    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ESP)
    s.bind((args.src, 0))
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((args.src, 0))
    # Let the kernel fragment the oversized packets (no DF, no PMTU error).
    IP_MTU_DISCOVER, IP_PMTUDISC_DONT = 10, 0
    for sock in (s, u):
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sent = {k: 0 for k in kinds}
    dst = (args.dst, 0)

    def raw(pkt):
        s.sendto(pkt, dst)

    def udp(pkt):
        u.sendto(pkt, (args.dst, args.udp_port))

    def send(kind, how, pkt, gap=1):
        how(pkt)
        sent[kind] += 1
        time.sleep(args.gap * gap)

    good = lambda i: echo_request(args.inner_src, args.inner_dst, 0xBEEF, i)
    base = args.seq_base
    # The injection SA's numbers: every packet that passes its integrity
    # check takes the next one, so each is new to its window.
    inj_seq = [base]

    def inj_next():
        inj_seq[0] += 1
        return inj_seq[0]

    def noise(lo, hi, avoid_zero=True):
        """Random bytes whose first four (the SPI) are none of ours."""
        while True:
            b = os.urandom(random.randint(lo, hi))
            spi = struct.unpack("!I", b[:4])[0]
            if spi not in ours and not (avoid_zero and spi == 0):
                return b

    esp_over = OVERSIZE - 20 - 8 - 8 - 16 - 8  # outer IP, ESP header, IV, ICV, trailer and padding
    big = lambda src, i: echo_request(src, args.inner_dst, 0xBEEF, i, size=esp_over)

    def one(kind, i):
        if kind == "unknown":
            send(kind, raw, esp_gcm(args.unknown_spi + i, base + i, key, good(i), 4))
        elif kind == "badicv":
            send(kind, raw, esp_gcm(args.spi, base + i, key, good(i), 4, tamper_icv=True))
        elif kind == "replayold":
            send(kind, raw, esp_gcm(args.spi, 1 + i, key, good(i), 4))
        elif kind == "replaydup":
            pkt = esp_gcm(args.inj_spi, inj_next(), inj_key, MARK, 59)
            raw(pkt)
            time.sleep(args.gap)
            send(kind, raw, pkt)
        elif kind == "truncated":
            if i % 2 == 0:
                pkt = struct.pack("!I", args.spi)[: 1 + i % 4]  # not even an ESP header
            else:
                pkt = struct.pack("!II", args.spi, base + i) + os.urandom(8 + i % 8)
            send(kind, raw, pkt)
        elif kind == "badpad":
            # Pad bytes 0, 0, ...: the ICV is right, the padding is not.
            send(kind, raw, esp_gcm(args.inj_spi, inj_next(), inj_key, good(i), 4, pad=lambda j: 0))
        elif kind == "selector":
            bad = echo_request("10.9.9.9", args.inner_dst, 0xBEEF, i)
            send(kind, raw, esp_gcm(args.inj_spi, inj_next(), inj_key, bad, 4))
        elif kind == "udp_unknown":
            send(kind, udp, esp_gcm(args.unknown_spi + 100 + i, base + i, key, good(i), 4))
        elif kind == "udp_encap":
            send(kind, udp, esp_gcm(args.spi, base + 300 + i, key, good(i), 4))
        elif kind == "udp_truncated":
            send(kind, udp, bytes([0x01, 0x02, 0x03])[: 2 + i % 2])
        elif kind == "random":
            send(kind, raw, noise(8, 1400))
        elif kind == "farold":
            send(kind, raw, esp_gcm(args.inj_spi, 1 + i, inj_key, good(i), 4))
        elif kind == "replaycap":
            if i < len(captured):
                send(kind, raw, captured[i])
        elif kind == "oversized":
            send(kind, raw, esp_gcm(args.spi, base + 400 + i, key, big(args.inner_src, i), 4, tamper_icv=True), gap=10)
        elif kind == "oversized_sel":
            send(kind, raw, esp_gcm(args.inj_spi, inj_next(), inj_key, big("10.9.9.9", i), 4), gap=10)
        elif kind == "udp_oversized":
            send(kind, udp, struct.pack("!I", args.unknown_spi + 200 + i) + os.urandom(OVERSIZE - 28 - 4), gap=10)
        elif kind == "udp_garbage":
            send(kind, udp, noise(8, 1400))
        elif kind == "ike":
            send(kind, udp, bytes(4) + os.urandom(random.randint(4, 300)))
        elif kind == "keepalive":
            send(kind, udp, b"\xff")

    if args.interleave:
        for i in range(args.n):
            for kind in kinds:
                one(kind, i)
    else:
        for kind in kinds:
            for i in range(args.n):
                one(kind, i)
    print(json.dumps(sent), flush=True)


if __name__ == "__main__":
    main()
