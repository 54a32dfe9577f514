#!/usr/bin/python3
"""Independent check of the known-answer tables in ../kat_test.go.

Reads the tables out of the Go source and recomputes every vector with
Python's `cryptography` package and hmac/hashlib, so that a transcription
error in a table cannot pass for an implementation bug (or hide one).
Run: /usr/bin/python3 algo/testdata/kat_verify.py
"""
import hashlib, hmac, os, re, sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

src = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kat_test.go")).read()

def table(name):
    m = re.search(r"var %s = \[\]\w+\{\n(.*?)\n\}\n" % name, src, re.S)
    return m.group(1)

def fields(block):
    out = {}
    for k, q, v in re.findall(r"(\w+):\s*(\"|`)(.*?)\2", block, re.S):
        out[k] = v
    a = re.search(r"alg:\s*(\w+)", block)
    if a:
        out["alg"] = a.group(1)
    return out

def h(s):
    return bytes.fromhex("".join(s.split()))

fail = 0
def check(ok, what):
    global fail
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        fail += 1

# AEAD vectors
for block in re.split(r"\n\t\},\n\t\{", table("aeadKATs")):
    f = fields(block)
    key, seq, nonce, pt, aad, pkt = (h(f[k]) for k in ("key", "seq", "nonce", "plaintext", "aad", "packet"))
    name = f["name"]
    spi = pkt[:4]
    hdr_ok = pkt[4:8] == seq[-4:] and pkt[8:16] == nonce[4:]
    aad_ok = aad == (spi + seq if f["alg"] != "katGMAC" else pkt[:-16])
    if f["alg"] == "katGCM":
        out = AESGCM(key).encrypt(nonce, pt, aad)
        body_ok = pkt[16:] == out
    elif f["alg"] == "katChaCha":
        out = ChaCha20Poly1305(key).encrypt(nonce, pt, aad)
        body_ok = pkt[16:] == out
    else:  # GMAC: empty plaintext, everything is AAD
        out = AESGCM(key).encrypt(nonce, b"", aad)
        body_ok = pkt[-16:] == out and pkt[16:-16] == pt
    check(hdr_ok and aad_ok and body_ok, "%s (%d-bit key, %d-byte seq, pt %d)" % (name, len(key) * 8, len(seq), len(pt)))

# HMAC vectors
hashes = {"md5": hashlib.md5, "sha1": hashlib.sha1, "sha256": hashlib.sha256,
          "sha384": hashlib.sha384, "sha512": hashlib.sha512}
for m in re.finditer(r"\{\"(RFC [^\"]+)\", ndis\.\w+, (\w+)\.New(\d*), \w+,\s*\"(\w+)\",\s*(\"[^\"]*\"|`[^`]*`), (\d+)\}", table("hmacKATs")):
    name, pkg, bits, key, digest, icv = m.groups()
    hname = {"md5": "md5", "sha1": "sha1", "sha256": "sha256"}.get(pkg, "sha384" if bits == "384" else "sha512")
    d = h(digest.strip('"`'))
    check(hmac.new(h(key), b"Hi There", hashes[hname]).digest() == d, "%s (%s, ICV %s)" % (name, hname, icv))

# AES-CBC vectors (RFC 3602): ciphertext from key, IV and plaintext; and the
# plaintext must end in a well-formed ESP trailer (padding 1, 2, 3, ...).
for block in re.split(r"\n\t\},\n\t\{", table("cbcKATs")):
    f = fields(block)
    key, iv, pt, ct = (h(f[k]) for k in ("key", "iv", "plaintext", "ciphertext"))
    e = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    out = e.update(pt) + e.finalize()
    padlen = pt[-2]
    trailer_ok = pt[-2 - padlen:-2] == bytes(range(1, padlen + 1))
    check(out == ct and trailer_ok, "%s (pad %d, next header %d)" % (f["name"], padlen, pt[-1]))

print("%d failure(s)" % fail)
sys.exit(1 if fail else 0)
