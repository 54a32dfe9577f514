package algo

import (
	"slices"

	"vnic/ndis"
)

// Algorithm describes one ESP algorithm identifier: the names Linux's ip
// xfrm and NDIS give it, its key and ICV sizes, and how vnic reports it.
// Catalogue is the one list of them: New, the OID channel's names, the
// CLI's words and the device's capabilities all derive from it, so adding
// an algorithm is a row here and its cipher in New.
type Algorithm struct {
	// Name is the Linux XFRM name, for example "rfc4106(gcm(aes))";
	// Compat is ip xfrm's short name for it, if any ("aes" for
	// "cbc(aes)").
	Name, Compat string
	// NDIS is the constant name, for example
	// "IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_128"; vnic's extensions are
	// named VNIC_... .
	NDIS string
	// Exactly one of Encryption and Authentication is set.
	Encryption     ndis.EncryptionID
	Authentication ndis.AuthenticationID
	// KeyLen is the key length in bytes, salt included; 0 for the HMACs,
	// which take keys of several lengths, and for NULL encryption.
	// SaltLen is how many of those bytes are the salt (RFC 4106 §8.1).
	KeyLen, SaltLen int
	// Combined is true for the AEADs (AES-GCM, ChaCha20-Poly1305), which
	// need no authentication algorithm, and for AES-GMAC, which needs no
	// encryption algorithm. ICVs are a combined mode's ICV lengths in
	// bytes, the default first.
	Combined bool
	ICVs     []int
	// Digest is an HMAC's digest length in bytes (its recommended key
	// length and longest ICV), DefaultICV the truncation its RFC gives
	// (RFC 2404, RFC 4868), and XfrmAuthBits the ICV length in bits that
	// Linux gives it when it is configured with `auth` rather than
	// `auth-trunc`.
	Digest, DefaultICV, XfrmAuthBits int
	// Legacy algorithms are refused unless explicitly allowed, and not
	// reported as capabilities.
	Legacy bool
	// Extension algorithms have no NDIS IPsecOffloadV2 identifier: the
	// capabilities report them among vnic's own.
	Extension bool
}

// gcmICVs are the ICV lengths of AES-GCM in ESP (RFC 4106 §8.1), 16 the
// default.
var gcmICVs = []int{16, 12, 8}

// Catalogue lists every algorithm identifier vnic knows, legacy ones
// included.
var Catalogue = []Algorithm{
	{Name: "ecb(cipher_null)", Compat: "cipher_null", NDIS: "IPSEC_OFFLOAD_V2_ENCRYPTION_NONE", Encryption: ndis.EncryptionNone},
	{Name: "cbc(des)", Compat: "des", NDIS: "IPSEC_OFFLOAD_V2_ENCRYPTION_DES_CBC", Encryption: ndis.EncryptionDESCBC, KeyLen: 8, Legacy: true},
	{Name: "cbc(des3_ede)", Compat: "des3_ede", NDIS: "IPSEC_OFFLOAD_V2_ENCRYPTION_3_DES_CBC", Encryption: ndis.Encryption3DESCBC, KeyLen: 24, Legacy: true},
	{Name: "rfc4106(gcm(aes))", NDIS: "IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_128", Encryption: ndis.EncryptionAESGCM128, KeyLen: 20, SaltLen: 4, Combined: true, ICVs: gcmICVs},
	{Name: "rfc4106(gcm(aes))", NDIS: "IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_192", Encryption: ndis.EncryptionAESGCM192, KeyLen: 28, SaltLen: 4, Combined: true, ICVs: gcmICVs},
	{Name: "rfc4106(gcm(aes))", NDIS: "IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_256", Encryption: ndis.EncryptionAESGCM256, KeyLen: 36, SaltLen: 4, Combined: true, ICVs: gcmICVs},
	{Name: "cbc(aes)", Compat: "aes", NDIS: "IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_128", Encryption: ndis.EncryptionAESCBC128, KeyLen: 16},
	{Name: "cbc(aes)", Compat: "aes", NDIS: "IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_192", Encryption: ndis.EncryptionAESCBC192, KeyLen: 24},
	{Name: "cbc(aes)", Compat: "aes", NDIS: "IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_256", Encryption: ndis.EncryptionAESCBC256, KeyLen: 32},
	{Name: "rfc7539esp(chacha20,poly1305)", NDIS: "VNIC_ENCRYPTION_CHACHA20_POLY1305", Encryption: ndis.EncryptionChaCha20Poly1305, KeyLen: 36, SaltLen: 4, Combined: true, ICVs: []int{16}, Extension: true},

	{Name: "hmac(md5)", Compat: "md5", NDIS: "IPSEC_OFFLOAD_V2_AUTHENTICATION_MD5", Authentication: ndis.AuthenticationMD5, Digest: 16, DefaultICV: 12, XfrmAuthBits: 96, Legacy: true},
	{Name: "hmac(sha1)", Compat: "sha1", NDIS: "IPSEC_OFFLOAD_V2_AUTHENTICATION_SHA_1", Authentication: ndis.AuthenticationSHA1, Digest: 20, DefaultICV: 12, XfrmAuthBits: 96},
	{Name: "hmac(sha256)", Compat: "sha256", NDIS: "IPSEC_OFFLOAD_V2_AUTHENTICATION_SHA_256", Authentication: ndis.AuthenticationSHA256, Digest: 32, DefaultICV: 16, XfrmAuthBits: 96},
	{Name: "rfc4543(gcm(aes))", NDIS: "IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_128", Authentication: ndis.AuthenticationAESGMAC128, KeyLen: 20, SaltLen: 4, Combined: true, ICVs: []int{16}},
	{Name: "rfc4543(gcm(aes))", NDIS: "IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_192", Authentication: ndis.AuthenticationAESGMAC192, KeyLen: 28, SaltLen: 4, Combined: true, ICVs: []int{16}},
	{Name: "rfc4543(gcm(aes))", NDIS: "IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_256", Authentication: ndis.AuthenticationAESGMAC256, KeyLen: 36, SaltLen: 4, Combined: true, ICVs: []int{16}},
	{Name: "hmac(sha384)", Compat: "sha384", NDIS: "VNIC_AUTHENTICATION_SHA_384", Authentication: ndis.AuthenticationSHA384, Digest: 48, DefaultICV: 24, XfrmAuthBits: 192, Extension: true},
	{Name: "hmac(sha512)", Compat: "sha512", NDIS: "VNIC_AUTHENTICATION_SHA_512", Authentication: ndis.AuthenticationSHA512, Digest: 64, DefaultICV: 32, XfrmAuthBits: 256, Extension: true},
}

// EncryptionAlgorithm returns the catalogue entry of an encryption
// identifier.
func EncryptionAlgorithm(id ndis.EncryptionID) (Algorithm, bool) {
	i := slices.IndexFunc(Catalogue, func(a Algorithm) bool { return id != 0 && a.Encryption == id })
	if i < 0 {
		return Algorithm{}, false
	}
	return Catalogue[i], true
}

// AuthenticationAlgorithm returns the catalogue entry of an authentication
// identifier.
func AuthenticationAlgorithm(id ndis.AuthenticationID) (Algorithm, bool) {
	i := slices.IndexFunc(Catalogue, func(a Algorithm) bool { return id != 0 && a.Authentication == id })
	if i < 0 {
		return Algorithm{}, false
	}
	return Catalogue[i], true
}

// Named returns the entries whose Name or Compat is name, in catalogue
// order (AES-GCM-128, -192 and -256 share one name, told apart by their
// key lengths).
func Named(name string) []Algorithm {
	var out []Algorithm
	for _, a := range Catalogue {
		if name != "" && (a.Name == name || a.Compat == name) {
			out = append(out, a)
		}
	}
	return out
}

// Masks are the algorithm bitmasks of the capabilities: the NDIS
// IPsecOffloadV2 ones, and vnic's extensions.
type Masks struct {
	Encryption, Authentication         uint32
	VnicEncryption, VnicAuthentication uint32
}

// Offered returns the bitmasks of the algorithms vnic offers: every one in
// the catalogue but the legacy ones, each in NDIS's masks or, without an
// NDIS identifier, in vnic's.
func Offered() Masks {
	var m Masks
	for _, a := range Catalogue {
		if a.Legacy {
			continue
		}
		enc, auth := &m.Encryption, &m.Authentication
		if a.Extension {
			enc, auth = &m.VnicEncryption, &m.VnicAuthentication
		}
		*enc |= uint32(a.Encryption)
		*auth |= uint32(a.Authentication)
	}
	return m
}
