package oid

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// IPProto is an IP protocol number. In JSON it is written as a number and
// read from a number or a name ("tcp", "udp", "icmp", "ipv6-icmp", "sctp",
// "udplite", "esp", "gre", "any").
type IPProto uint8

var protoNames = map[string]IPProto{
	"any": 0, "icmp": 1, "igmp": 2, "ipip": 4, "tcp": 6, "udp": 17, "ipv6": 41,
	"gre": 47, "esp": 50, "ah": 51, "icmpv6": 58, "ipv6-icmp": 58, "sctp": 132,
	"udplite": 136,
}

// ParseIPProto reads a protocol number (0 to 255) or one of the names
// IPProto accepts.
func ParseIPProto(s string) (IPProto, error) {
	if p, ok := protoNames[strings.ToLower(s)]; ok {
		return p, nil
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		return 0, fmt.Errorf("expected a protocol number from 0 to 255 or a name (tcp, udp, icmp, ipv6-icmp, sctp, ...), got %s", quote(s))
	}
	return IPProto(n), nil
}

// String returns the protocol's name, or its number when it has none.
func (p IPProto) String() string {
	switch p {
	case 0:
		return "any"
	case 58:
		return "ipv6-icmp"
	}
	for n, v := range protoNames {
		if v == p && n != "icmpv6" {
			return n
		}
	}
	return strconv.Itoa(int(p))
}

// UnmarshalJSON reads a number or a name.
func (p *IPProto) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := ParseIPProto(s)
		if err != nil {
			return fmt.Errorf("selector proto: %w", err)
		}
		*p = v
		return nil
	}
	var n uint8
	if err := json.Unmarshal(b, &n); err != nil {
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) {
			if got, lit, _ := strings.Cut(typ.Value, " "); got == "number" && lit != "" {
				return fmt.Errorf("selector proto: expected a protocol number from 0 to 255 or a name such as \"tcp\", got %s", numberWords(lit, typ.Type))
			}
		}
		return fmt.Errorf("selector proto: expected a protocol number from 0 to 255 or a name such as \"tcp\"")
	}
	*p = IPProto(n)
	return nil
}
