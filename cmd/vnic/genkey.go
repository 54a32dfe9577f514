package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"

	"vnic/algo"
	"vnic/xfrm"
)

// genkeyUsage is the usage of `vnic genkey`.
const genkeyUsage = "genkey: expected an algorithm and, for AES, the key size, like: vnic genkey 'rfc4106(gcm(aes))' 256"

// genkey prints a fresh random key for an algorithm, in the 0x form
// `vnic sa add` and ip xfrm take, salt included: `vnic genkey NAME
// [BITS]`, as `wg genkey` makes WireGuard keys. vnic refuses to send with
// a key twice, so SAs need fresh keys all the time. The key comes from
// crypto/rand and goes to stdout only.
func (c *cli) genkey(args []string) error {
	if len(args) == 0 || len(args) > 2 {
		return usageErr(genkeyUsage)
	}
	bits := 0
	if len(args) == 2 {
		n, err := strconv.Atoi(args[1])
		if err != nil || n <= 0 {
			return usageErr("genkey: expected the key size in bits, like 256, got %s", xfrm.QuoteWord(args[1]))
		}
		bits = n
	}
	n, err := algo.KeyLen(args[0], bits)
	if err != nil {
		return fmt.Errorf("genkey: %w", err)
	}
	key := make([]byte, n)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("genkey: %w", err)
	}
	fmt.Fprintf(c.stdout, "0x%s\n", hex.EncodeToString(key))
	clear(key)
	return nil
}
