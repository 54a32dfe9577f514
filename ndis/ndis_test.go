package ndis

import (
	"fmt"
	"testing"
)

func TestStatusNames(t *testing.T) {
	for _, s := range []Status{StatusSuccess, StatusFailure, StatusInvalidParameter, StatusResources, StatusNotSupported, StatusInvalidData} {
		got, ok := ParseStatus(s.String())
		if !ok || got != s {
			t.Errorf("%v does not round-trip: %v %v", s, got, ok)
		}
	}
	if Status(0x1234).String() != "NDIS_STATUS_0x00001234" {
		t.Errorf("unknown status prints %q", Status(0x1234))
	}
	if _, ok := ParseStatus("NDIS_STATUS_NOPE"); ok {
		t.Error("parsed an unknown name")
	}
}

func TestStatusOf(t *testing.T) {
	e := Errorf(StatusResources, "device full: %d", 3)
	cases := []struct {
		err  error
		want Status
	}{
		{nil, StatusSuccess},
		{e, StatusResources},
		{fmt.Errorf("element 2: %w", e), StatusResources},
		{fmt.Errorf("plain"), StatusFailure},
	}
	for _, c := range cases {
		if got := StatusOf(c.err); got != c.want {
			t.Errorf("StatusOf(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	if e.Error() != "device full: 3" {
		t.Errorf("reason %q", e.Error())
	}
}

func TestCryptoStatusNames(t *testing.T) {
	if CryptoTunnelESPAuthFailed.String() != "CRYPTO_TUNNEL_ESP_AUTH_FAILED" || CryptoStatus(99).String() != "CRYPTO_99" {
		t.Error("CryptoStatus names")
	}
}
