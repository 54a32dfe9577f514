package algo

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// KeyLen returns the length in bytes of a fresh key for the algorithm
// name (its Linux name or ip xfrm's short one), salt included, as
// `vnic genkey` makes it: bits chooses among the key sizes of a name
// that has several (AES-GCM-128, -192, -256: the AES key's bits, the
// salt left out), 0 the smallest; an HMAC's key is as long as its
// digest (RFC 2104 §3, RFC 4868 §2.1.1). Legacy algorithms and those
// that take no key are refused.
func KeyLen(name string, bits int) (int, error) {
	as := Named(name)
	if len(as) == 0 {
		var names []string
		for _, a := range Catalogue {
			if !a.Legacy && (a.KeyLen > 0 || a.Digest > 0) && !slices.Contains(names, a.Name) {
				names = append(names, a.Name)
			}
		}
		return 0, fmt.Errorf("unknown algorithm %q: expected %s", name, strings.Join(names, ", "))
	}
	a := as[0]
	switch {
	case a.Legacy:
		return 0, fmt.Errorf("%s is a legacy algorithm that vnic refuses by default: no key made", a.Name)
	case a.Digest > 0:
		if bits != 0 && bits != a.Digest*8 {
			return 0, fmt.Errorf("%s: keys are %d bits (its digest's length), got %d", a.Name, a.Digest*8, bits)
		}
		return a.Digest, nil
	case a.KeyLen == 0:
		return 0, fmt.Errorf("%s takes no key", a.Name)
	}
	var sizes []string
	for _, x := range as {
		b := (x.KeyLen - x.SaltLen) * 8
		if bits == 0 || bits == b {
			return x.KeyLen, nil
		}
		sizes = append(sizes, strconv.Itoa(b))
	}
	return 0, fmt.Errorf("%s: key sizes are %s bits, got %d", a.Name, strings.Join(sizes, ", "), bits)
}
