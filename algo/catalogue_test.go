package algo

import (
	"slices"
	"strings"
	"testing"

	"vnic/ndis"
)

// TestCatalogue checks the catalogue against itself and against New: each
// identifier has one entry, and every entry makes a cipher of its name
// with the key lengths it gives (legacy ones only when allowed), whose ICV
// is the default the entry says.
func TestCatalogue(t *testing.T) {
	seenEnc := map[ndis.EncryptionID]bool{}
	seenAuth := map[ndis.AuthenticationID]bool{}
	for _, a := range Catalogue {
		if (a.Encryption == 0) == (a.Authentication == 0) {
			t.Errorf("%s: want exactly one of Encryption and Authentication", a.NDIS)
		}
		if a.Encryption != 0 && seenEnc[a.Encryption] || a.Authentication != 0 && seenAuth[a.Authentication] {
			t.Errorf("%s: identifier listed twice", a.NDIS)
		}
		seenEnc[a.Encryption], seenAuth[a.Authentication] = true, true
		if a.Combined != (len(a.ICVs) > 0) || a.Combined == (a.Digest > 0) && a.Authentication != 0 {
			t.Errorf("%s: a combined mode gives ICVs, an HMAC a digest", a.NDIS)
		}
		if got, ok := EncryptionAlgorithm(a.Encryption); a.Encryption != 0 && (!ok || got.NDIS != a.NDIS) {
			t.Errorf("%s: EncryptionAlgorithm finds %q", a.NDIS, got.NDIS)
		}
		if got, ok := AuthenticationAlgorithm(a.Authentication); a.Authentication != 0 && (!ok || got.NDIS != a.NDIS) {
			t.Errorf("%s: AuthenticationAlgorithm finds %q", a.NDIS, got.NDIS)
		}
		if !slices.ContainsFunc(Named(a.Name), func(b Algorithm) bool { return b.NDIS == a.NDIS }) ||
			a.Compat != "" && !slices.ContainsFunc(Named(a.Compat), func(b Algorithm) bool { return b.NDIS == a.NDIS }) {
			t.Errorf("%s: Named(%q) or Named(%q) misses it", a.NDIS, a.Name, a.Compat)
		}

		// A cipher from the entry: the entry with an HMAC (SHA-256) or
		// with AES-CBC-128 where it needs the other half.
		s := Spec{AllowLegacy: a.Legacy}
		wantICV := 0
		switch {
		case a.Encryption != 0:
			s.Encryption, s.EncryptionKey = a.Encryption, make([]byte, a.KeyLen)
			if !a.Combined {
				s.Authentication, s.AuthenticationKey = ndis.AuthenticationSHA256, make([]byte, 32)
				wantICV = 16
			} else {
				wantICV = a.ICVs[0]
			}
		case a.Combined: // AES-GMAC
			s.Encryption, s.Authentication, s.AuthenticationKey = ndis.EncryptionNone, a.Authentication, make([]byte, a.KeyLen)
			wantICV = a.ICVs[0]
		default: // an HMAC
			s.Encryption, s.EncryptionKey = ndis.EncryptionAESCBC128, make([]byte, 16)
			s.Authentication, s.AuthenticationKey = a.Authentication, make([]byte, a.Digest)
			wantICV = a.DefaultICV
		}
		c, err := New(s)
		if err != nil {
			t.Errorf("%s: New: %v", a.NDIS, err)
			continue
		}
		if !strings.Contains(c.Name(), a.Name) || c.ICVLen() != wantICV {
			t.Errorf("%s: New made %q with a %d-byte ICV, want %s with %d", a.NDIS, c.Name(), c.ICVLen(), a.Name, wantICV)
		}
		if a.Legacy {
			s.AllowLegacy = false
			if _, err := New(s); err == nil {
				t.Errorf("%s: a legacy algorithm was taken without AllowLegacy", a.NDIS)
			}
		}
	}
}

// TestOffered: the capabilities' algorithm masks, as the device reported
// them before they came from the catalogue, legacy algorithms left out.
func TestOffered(t *testing.T) {
	want := Masks{
		Encryption: uint32(ndis.EncryptionNone | ndis.EncryptionAESGCM128 | ndis.EncryptionAESGCM192 |
			ndis.EncryptionAESGCM256 | ndis.EncryptionAESCBC128 | ndis.EncryptionAESCBC192 | ndis.EncryptionAESCBC256),
		Authentication: uint32(ndis.AuthenticationSHA1 | ndis.AuthenticationSHA256 |
			ndis.AuthenticationAESGMAC128 | ndis.AuthenticationAESGMAC192 | ndis.AuthenticationAESGMAC256),
		VnicEncryption:     uint32(ndis.EncryptionChaCha20Poly1305),
		VnicAuthentication: uint32(ndis.AuthenticationSHA384 | ndis.AuthenticationSHA512),
	}
	if got := Offered(); got != want {
		t.Errorf("Offered() = %+v, want %+v", got, want)
	}
}
