"""Small helpers shared by the integration test scripts in this folder."""

import struct


def int0(s):
    """An integer in Python literal syntax: decimal, 0x hex, 0o, 0b."""
    return int(s, 0)


def csum(b):
    """The Internet checksum (RFC 1071) of b."""
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
