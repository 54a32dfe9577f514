package offload

import (
	"vnic/header"
	"vnic/sadb"
)

// KeepaliveByte is the one byte of a NAT keepalive (RFC 3948 §2.3).
const KeepaliveByte = 0xFF

// KeepaliveOuter returns the outer header of the NAT keepalives of the
// ESP-in-UDP SA c: UDP from its source port to its destination's.
func KeepaliveOuter(c *sadb.Config) header.Outer { return saOuter(c) }
