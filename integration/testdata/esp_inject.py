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

Every inner packet is an ICMP echo request to vnic's inner address carrying
the payload MARK, so that a capture can tell whether one got through.
Prints one JSON line: how many packets of each kind were sent (replaydup
counts pairs).
"""
import argparse
import json
import os
import socket
import struct
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from netutil import int0, csum

MARK = b"VNIC-INJECTED-PACKET"


def echo_request(src, dst, ident, seq):
    """An IPv4 ICMP echo request carrying MARK."""
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + MARK
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
    args = p.parse_args()

    key, inj_key = bytes.fromhex(args.key), bytes.fromhex(args.inj_key)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ESP)
    s.bind((args.src, 0))
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((args.src, 0))
    kinds = ("unknown", "badicv", "replayold", "replaydup", "truncated", "badpad", "selector",
             "udp_unknown", "udp_encap", "udp_truncated")
    sent = {k: 0 for k in kinds}
    dst = (args.dst, 0)

    def send(kind, pkt):
        if kind.startswith("udp_"):
            u.sendto(pkt, (args.dst, args.udp_port))
        else:
            s.sendto(pkt, dst)
        sent[kind] += 1
        time.sleep(args.gap)

    good = lambda i: echo_request(args.inner_src, args.inner_dst, 0xBEEF, i)
    base = args.seq_base
    for i in range(args.n):
        send("unknown", esp_gcm(args.unknown_spi + i, base + i, key, good(i), 4))
    for i in range(args.n):
        send("badicv", esp_gcm(args.spi, base + i, key, good(i), 4, tamper_icv=True))
    for i in range(args.n):
        send("replayold", esp_gcm(args.spi, 1 + i, key, good(i), 4))
    for i in range(args.n):
        pkt = esp_gcm(args.inj_spi, base + i, inj_key, MARK, 59)
        s.sendto(pkt, dst)
        time.sleep(args.gap)
        send("replaydup", pkt)
    for i in range(args.n):
        if i % 2 == 0:
            pkt = struct.pack("!I", args.spi)[: 1 + i % 4]  # not even an ESP header
        else:
            pkt = struct.pack("!II", args.spi, base + i) + os.urandom(8 + i)
        send("truncated", pkt)
    for i in range(args.n):
        # Pad bytes 0, 0, ...: the ICV is right, the padding is not.
        send("badpad", esp_gcm(args.inj_spi, base + 100 + i, inj_key, good(i), 4, pad=lambda j: 0))
    for i in range(args.n):
        bad = echo_request("10.9.9.9", args.inner_dst, 0xBEEF, i)
        send("selector", esp_gcm(args.inj_spi, base + 200 + i, inj_key, bad, 4))
    for i in range(args.n):
        send("udp_unknown", esp_gcm(args.unknown_spi + 100 + i, base + i, key, good(i), 4))
    for i in range(args.n):
        send("udp_encap", esp_gcm(args.spi, base + 300 + i, key, good(i), 4))
    for i in range(args.n):
        send("udp_truncated", bytes([0x01, 0x02, 0x03])[: 2 + i % 2])
    print(json.dumps(sent), flush=True)


if __name__ == "__main__":
    main()
