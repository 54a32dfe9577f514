package oid

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"vnic/ndis"
)

// Algorithm describes one NDIS algorithm identifier: its Linux XFRM name,
// its NDIS constant name and its key.
type Algorithm struct {
	// Name is the Linux XFRM name, for example "rfc4106(gcm(aes))".
	Name string
	// NDIS is the constant name, for example
	// "IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_128"; vnic's extensions are
	// named VNIC_... .
	NDIS string
	// Exactly one of Encryption and Authentication is set.
	Encryption     ndis.EncryptionID
	Authentication ndis.AuthenticationID
	// KeyLen is the key length in bytes, salt included; 0 for the HMACs,
	// which take keys of several lengths, and for NULL encryption.
	KeyLen int
	// Combined is true for the AEADs (AES-GCM, ChaCha20-Poly1305), which
	// need no authentication algorithm, and for AES-GMAC, which needs no
	// encryption algorithm.
	Combined bool
	// XfrmAuthBits is the ICV length in bits that Linux gives the HMAC
	// when it is configured with `auth` rather than `auth-trunc`.
	XfrmAuthBits int
	// Legacy algorithms are refused unless explicitly allowed.
	Legacy bool
}

// Catalogue lists every algorithm identifier vnic knows, legacy ones
// included.
var Catalogue = []Algorithm{
	{Name: "ecb(cipher_null)", NDIS: "IPSEC_OFFLOAD_V2_ENCRYPTION_NONE", Encryption: ndis.EncryptionNone},
	{Name: "cbc(des)", NDIS: "IPSEC_OFFLOAD_V2_ENCRYPTION_DES_CBC", Encryption: ndis.EncryptionDESCBC, KeyLen: 8, Legacy: true},
	{Name: "cbc(des3_ede)", NDIS: "IPSEC_OFFLOAD_V2_ENCRYPTION_3_DES_CBC", Encryption: ndis.Encryption3DESCBC, KeyLen: 24, Legacy: true},
	{Name: "rfc4106(gcm(aes))", NDIS: "IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_128", Encryption: ndis.EncryptionAESGCM128, KeyLen: 20, Combined: true},
	{Name: "rfc4106(gcm(aes))", NDIS: "IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_192", Encryption: ndis.EncryptionAESGCM192, KeyLen: 28, Combined: true},
	{Name: "rfc4106(gcm(aes))", NDIS: "IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_256", Encryption: ndis.EncryptionAESGCM256, KeyLen: 36, Combined: true},
	{Name: "cbc(aes)", NDIS: "IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_128", Encryption: ndis.EncryptionAESCBC128, KeyLen: 16},
	{Name: "cbc(aes)", NDIS: "IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_192", Encryption: ndis.EncryptionAESCBC192, KeyLen: 24},
	{Name: "cbc(aes)", NDIS: "IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_256", Encryption: ndis.EncryptionAESCBC256, KeyLen: 32},
	{Name: "rfc7539esp(chacha20,poly1305)", NDIS: "VNIC_ENCRYPTION_CHACHA20_POLY1305", Encryption: ndis.EncryptionChaCha20Poly1305, KeyLen: 36, Combined: true},

	{Name: "hmac(md5)", NDIS: "IPSEC_OFFLOAD_V2_AUTHENTICATION_MD5", Authentication: ndis.AuthenticationMD5, XfrmAuthBits: 96, Legacy: true},
	{Name: "hmac(sha1)", NDIS: "IPSEC_OFFLOAD_V2_AUTHENTICATION_SHA_1", Authentication: ndis.AuthenticationSHA1, XfrmAuthBits: 96},
	{Name: "hmac(sha256)", NDIS: "IPSEC_OFFLOAD_V2_AUTHENTICATION_SHA_256", Authentication: ndis.AuthenticationSHA256, XfrmAuthBits: 96},
	{Name: "rfc4543(gcm(aes))", NDIS: "IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_128", Authentication: ndis.AuthenticationAESGMAC128, KeyLen: 20, Combined: true},
	{Name: "rfc4543(gcm(aes))", NDIS: "IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_192", Authentication: ndis.AuthenticationAESGMAC192, KeyLen: 28, Combined: true},
	{Name: "rfc4543(gcm(aes))", NDIS: "IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_256", Authentication: ndis.AuthenticationAESGMAC256, KeyLen: 36, Combined: true},
	{Name: "hmac(sha384)", NDIS: "VNIC_AUTHENTICATION_SHA_384", Authentication: ndis.AuthenticationSHA384, XfrmAuthBits: 192},
	{Name: "hmac(sha512)", NDIS: "VNIC_AUTHENTICATION_SHA_512", Authentication: ndis.AuthenticationSHA512, XfrmAuthBits: 256},
}

// EncryptionAlgorithm returns the catalogue entry of an encryption
// identifier.
func EncryptionAlgorithm(id ndis.EncryptionID) (Algorithm, bool) {
	for _, a := range Catalogue {
		if a.Encryption == id && id != 0 {
			return a, true
		}
	}
	return Algorithm{}, false
}

// AuthenticationAlgorithm returns the catalogue entry of an authentication
// identifier.
func AuthenticationAlgorithm(id ndis.AuthenticationID) (Algorithm, bool) {
	for _, a := range Catalogue {
		if a.Authentication == id && id != 0 {
			return a, true
		}
	}
	return Algorithm{}, false
}

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
		return fmt.Errorf("selector proto: expected a protocol number from 0 to 255 or a name such as \"tcp\"")
	}
	*p = IPProto(n)
	return nil
}
