#!/usr/bin/python3
"""An independent ESP peer for vnic's integration tests (scapy_test.go).

Runs in the peer namespace, where no vnic daemon runs. It listens for ESP
from vnic on a raw IPPROTO_ESP socket and on UDP port 4500 (RFC 3948, no
UDP_ENCAP option: this process reads the ESP itself), decrypts it with
scapy's SecurityAssociation, answers each ICMP echo request inside (the
reply's addresses swapped, its TOS kept, type 0, checksum recomputed),
encrypts the reply with its own outbound SA and sends it back the way the
request came (raw ESP or ESP-in-UDP), with --outer-tos as the TOS or
traffic class of the ESP packet.

Tunnel mode, IPv4 or IPv6 outer addresses. Algorithms:
  gcm         AES-GCM with a 16-byte ICV (RFC 4106), key = AES key || salt;
              with --esn the high bits go into the AAD, which scapy does.
  cbc-sha256  AES-CBC with HMAC-SHA-256-128 (RFC 3602, RFC 4868). scapy's
              ESP HMAC leaves out the ESN high bits (RFC 4303 §2.2.1 wants
              them after the packet, not sent), so with --esn this script
              computes and checks the ICV itself.

scapy quirks handled here: an esn or seq_num of 0 given to
encrypt()/decrypt() falls back to the SA's stored value, so sa.esn and
sa.seq_num are set explicitly before every packet; scapy writes a wrong UDP
length into an IPv4 NAT-T header, so UDP replies are sent through a kernel
UDP socket (the kernel writes the UDP header), never through scapy's
nat_t_header.

The inbound high bits are inferred as RFC 4303 Appendix A.2 says, from the
highest number received so far (--in-top is the initial value).

Prints "ready" on stdout once both sockets listen; exits --linger seconds
after answering --count echo requests (NAT keepalives are counted
meanwhile), after --timeout seconds or on SIGTERM, printing one JSON
summary line last.
"""
import argparse
import hashlib
import hmac
import json
import select
import signal
import socket
import struct
import sys
import time

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from scapy.compat import raw
from scapy.layers.inet import IP, ICMP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation, IPSecIntegrityError
from netutil import int0

M32 = 0xFFFFFFFF


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Side:
    """One direction's SA: scapy does the cipher, and the ICV too unless
    HMAC must cover the ESN high bits."""

    def __init__(self, args, spi, src, dst):
        self.spi = spi
        self.esn = args.esn
        self.manual_hmac = None
        tunnel = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
        kw = dict(spi=spi, tunnel_header=tunnel, esn_en=args.esn, esn=0)
        key = bytes.fromhex(args.key)
        if args.algo == "gcm":
            kw.update(crypt_algo="AES-GCM", crypt_key=key, auth_algo="NULL")
        elif args.algo == "cbc-sha256":
            akey = bytes.fromhex(args.auth_key)
            kw.update(crypt_algo="AES-CBC", crypt_key=key)
            if args.esn:
                kw.update(auth_algo="NULL")
                self.manual_hmac = akey
            else:
                kw.update(auth_algo="SHA2-256-128", auth_key=akey)
        else:
            raise SystemExit("unknown --algo " + args.algo)
        self.sa = SecurityAssociation(ESP, **kw)
        self.algo, self.key = args.algo, key
        self.outer_src, self.outer_dst = src, dst

    def _icv(self, body, hi):
        # RFC 4303 §2.2.1 / §3.3.2.1: the ICV covers the ESP packet and,
        # with ESN, the high-order 32 bits appended (never sent).
        extra = struct.pack("!I", hi) if self.esn else b""
        return hmac.new(self.manual_hmac, body + extra, hashlib.sha256).digest()[:16]

    def open(self, data, seq64):
        """Verify and decrypt the ESP bytes data as number seq64; returns
        the inner packet or raises IPSecIntegrityError."""
        hi = seq64 >> 32
        if self.manual_hmac is not None:
            if len(data) < 8 + 16 + 16:
                raise IPSecIntegrityError("short")
            body, icv = data[:-16], data[-16:]
            if not hmac.compare_digest(icv, self._icv(body, hi)):
                raise IPSecIntegrityError("HMAC with ESN high bits %d" % hi)
            data = body
        self.sa.esn = hi  # a 0 argument would fall back to this value
        if ":" in self.outer_src:
            outer = IPv6(src=self.outer_dst, dst=self.outer_src, nh=50)
        else:
            outer = IP(src=self.outer_dst, dst=self.outer_src, proto=50)
        pkt = outer.__class__(raw(outer / ESP(data)))
        return self.sa.decrypt(pkt, esn=hi)

    def trailer(self, data, seq64):
        """Decrypts the verified ESP bytes data again, with python3-
        cryptography rather than scapy (whose ESP decryption does not
        return the pad bytes), and returns what is wrong with the trailer
        (RFC 4303 §2.4: pad bytes 1, 2, 3, ..., the payload aligned, next
        header 4 for an IPv4 inner packet), or None."""
        hi = struct.pack("!I", seq64 >> 32) if self.esn else b""
        if self.algo == "gcm":
            key, salt = self.key[:-4], self.key[-4:]
            aad = data[:4] + hi + data[4:8]
            pt = AESGCM(key).decrypt(salt + data[8:16], data[16:], aad)
            align = 4
        else:
            d = Cipher(algorithms.AES(self.key), modes.CBC(data[8:24])).decryptor()
            pt = d.update(data[24:-16]) + d.finalize()
            align = 16
        padlen, nh = pt[-2], pt[-1]
        if len(pt) % align:
            return "payload of %d bytes is not aligned to %d" % (len(pt), align)
        if padlen + 2 > len(pt) or pt[-2 - padlen:-2] != bytes(range(1, padlen + 1)):
            return "pad bytes %s with pad length %d" % (pt[-2 - padlen:-2].hex(), padlen)
        if nh != 4:
            return "next header %d, want 4" % nh
        return None

    def seal(self, inner, seq64):
        """Encrypt inner as number seq64; returns the ESP bytes."""
        hi, lo = seq64 >> 32, seq64 & M32
        self.sa.seq_num = lo  # encrypt(seq_num=0) would fall back to it
        self.sa.esn = hi
        pkt = self.sa.encrypt(inner, esn=hi)
        esp = raw(pkt[ESP])
        if self.manual_hmac is not None:
            esp += self._icv(esp, hi)
        return esp


def infer(top, low, window):
    """RFC 4303 Appendix A.2: the full number for the low bits low, given
    the highest number received so far."""
    th, tl = top >> 32, top & M32
    if tl >= window - 1:
        hi = th if low >= tl - window + 1 else th + 1
    else:
        hi = th - 1 if low >= ((tl - window + 1) & M32) else th
    return (hi << 32) | low


class Stop(Exception):
    pass


def on_term(signum, frame):
    raise Stop()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--local", required=True, help="this end's underlay address")
    p.add_argument("--peer", required=True, help="vnic's underlay address")
    p.add_argument("--in-spi", type=int0, required=True)
    p.add_argument("--out-spi", type=int0, required=True)
    p.add_argument("--algo", default="gcm", choices=["gcm", "cbc-sha256"])
    p.add_argument("--key", required=True, help="hex; gcm: key||salt, cbc: the AES key")
    p.add_argument("--auth-key", default="", help="hex HMAC key (cbc-sha256)")
    p.add_argument("--in-key", default="", help="hex key of the inbound SA (default --key)")
    p.add_argument("--in-auth-key", default="", help="hex HMAC key of the inbound SA (default --auth-key)")
    p.add_argument("--esn", action="store_true")
    p.add_argument("--out-seq", type=int0, default=1, help="first outbound 64-bit sequence number")
    p.add_argument("--in-top", type=int0, default=0, help="highest inbound 64-bit number already seen")
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--udp-port", type=int, default=4500)
    p.add_argument("--count", type=int, required=True, help="exit after answering this many echo requests")
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--linger", type=float, default=0.0,
                   help="seconds to go on reading (and counting NAT keepalives) after the last reply")
    p.add_argument("--outer-tos", type=int, default=0,
                   help="TOS or traffic class of the ESP packets sent (3: ECN CE, as a congested router marks)")
    args = p.parse_args()

    out_sa = Side(args, args.out_spi, args.local, args.peer)
    in_args = argparse.Namespace(**vars(args))
    in_args.key = args.in_key or args.key
    in_args.auth_key = args.in_auth_key or args.auth_key
    in_sa = Side(in_args, args.in_spi, args.peer, args.local)

    v6 = ":" in args.local
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    rawsock = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_ESP)
    rawsock.bind((args.local, 0))
    udpsock = socket.socket(fam, socket.SOCK_DGRAM)
    udpsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    udpsock.bind((args.local, args.udp_port))
    if args.outer_tos:
        for sock in (rawsock, udpsock):
            if v6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, args.outer_tos)
            else:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, args.outer_tos)
    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)

    top = args.in_top
    seen = set()
    out_seq = args.out_seq
    stats = {"received": 0, "replied": 0, "auth_failed": 0, "replayed": 0, "wrong_spi": 0,
             "not_echo": 0, "bad_trailer": 0, "keepalives": 0, "raw": 0, "udp": 0, "in_seqs": [], "out_seqs": []}
    deadline = time.monotonic() + args.timeout
    linger_until = None
    try:
        while True:
            if stats["replied"] >= args.count and linger_until is None:
                linger_until = time.monotonic() + args.linger
            left = deadline - time.monotonic()
            if linger_until is not None:
                left = min(left, linger_until - time.monotonic())
                if left <= 0:
                    break
            if left <= 0:
                log("timeout")
                break
            ready, _, _ = select.select([rawsock, udpsock], [], [], left)
            for s in ready:
                data, addr = s.recvfrom(65535)
                if s is rawsock:
                    if not v6:  # an IPv4 raw socket hands over the IP header too
                        data = data[(data[0] & 0x0F) * 4:]
                    via = "raw"
                else:
                    if data == b"\xff":
                        stats["keepalives"] += 1
                        continue
                    via = "udp"
                if addr[0] != args.peer or len(data) < 8:
                    continue
                spi, low = struct.unpack("!II", data[:8])
                if spi != args.in_spi:
                    stats["wrong_spi"] += 1
                    log("wrong spi 0x%x via %s" % (spi, via))
                    continue
                stats["received"] += 1
                stats[via] += 1
                seq64 = infer(top, low, args.window) if args.esn else low
                try:
                    inner = in_sa.open(data, seq64)
                except IPSecIntegrityError as e:
                    stats["auth_failed"] += 1
                    log("auth failed seq %#x via %s: %s" % (seq64, via, e))
                    continue
                bad = in_sa.trailer(data, seq64)
                if bad:
                    stats["bad_trailer"] += 1
                    log("bad trailer seq %#x: %s" % (seq64, bad))
                if seq64 in seen:
                    stats["replayed"] += 1
                    continue
                seen.add(seq64)
                top = max(top, seq64)
                stats["in_seqs"].append(seq64)
                if not (IP in inner and ICMP in inner and inner[ICMP].type == 8):
                    stats["not_echo"] += 1
                    log("not an echo request: %r" % inner)
                    continue
                req = inner[IP]
                icmp = req[ICMP]
                reply = IP(src=req.dst, dst=req.src, ttl=64, tos=req.tos) / ICMP(type=0, code=0, id=icmp.id, seq=icmp.seq) / raw(icmp.payload)
                reply = IP(raw(reply))  # checksums computed
                esp = out_sa.seal(reply, out_seq)
                stats["out_seqs"].append(out_seq)
                out_seq += 1
                if via == "raw":
                    rawsock.sendto(esp, (args.peer, 0))
                else:
                    udpsock.sendto(esp, (args.peer, args.udp_port))
                stats["replied"] += 1
                log("echo seq %d in %#x out %#x via %s" % (icmp.seq, seq64, out_seq - 1, via))
    except Stop:
        log("terminated")
    stats["max_in_seq"] = max(stats["in_seqs"], default=0)
    stats["max_out_seq"] = max(stats["out_seqs"], default=0)
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
