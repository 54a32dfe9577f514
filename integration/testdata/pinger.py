#!/usr/bin/python3
"""A bounded ICMP echo client for vnic's integration tests.

ping(8) is not exact enough for them: with -c and -W, once some replies
have come it waits only two round-trip times after the last request, so on
a loaded machine a late last reply counts as lost; with -w it sends more
than -c requests until -c replies are in. This sends exactly --count echo
requests (IPv4, one every --interval seconds), then waits until every one
is answered or --timeout seconds have passed since the last request, and
prints one JSON line: {"sent": N, "received": M, "duplicates": D,
"max_rtt_ms": R}.
"""
import argparse
import json
import os
import select
import socket
import struct
import time
from netutil import csum


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dst", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--interval", type=float, default=0.05)
    p.add_argument("--timeout", type=float, default=3.0)
    p.add_argument("--size", type=int, default=56)
    p.add_argument("--tos", type=int, default=0, help="the requests' TOS byte (DSCP and ECN)")
    args = p.parse_args()

    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    if args.tos:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, args.tos)
    ident = os.getpid() & 0xFFFF
    sent_at = {}
    got = set()
    dups = 0
    max_rtt = 0.0
    payload = bytes(i & 0xFF for i in range(args.size))

    def receive(until):
        nonlocal dups, max_rtt
        while len(got) < args.count:
            left = until - time.monotonic()
            if left <= 0:
                return
            r, _, _ = select.select([s], [], [], left)
            if not r:
                return
            data, addr = s.recvfrom(65535)
            if addr[0] != args.dst:
                continue
            icmp = data[(data[0] & 0x0F) * 4:]
            if len(icmp) < 8:
                continue
            typ, _, _, rid, seq = struct.unpack("!BBHHH", icmp[:8])
            if typ != 0 or rid != ident or seq not in sent_at:
                continue
            if icmp[8:] != payload:
                continue  # a corrupted reply does not count
            if seq in got:
                dups += 1
                continue
            got.add(seq)
            max_rtt = max(max_rtt, time.monotonic() - sent_at[seq])

    for seq in range(1, args.count + 1):
        hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        pkt = hdr[:2] + struct.pack("!H", csum(hdr + payload)) + hdr[4:] + payload
        sent_at[seq] = time.monotonic()
        s.sendto(pkt, (args.dst, 0))
        receive(time.monotonic() + args.interval)
    receive(time.monotonic() + args.timeout)
    print(json.dumps({"sent": args.count, "received": len(got), "duplicates": dups,
                      "max_rtt_ms": round(max_rtt * 1000, 1)}), flush=True)


if __name__ == "__main__":
    main()
