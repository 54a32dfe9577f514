package oid

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"vnic/ndis"
	"vnic/sadb"
)

// TestBundleConfig decodes bundles as the server does and checks the SA
// configuration, or the status and reason of the refusal.
func TestBundleConfig(t *testing.T) {
	k20 := strings.Repeat("ab", 20)
	k16, k32 := strings.Repeat("01", 16), strings.Repeat("02", 32)
	tests := []struct {
		name   string
		json   string
		check  func(t *testing.T, c sadb.Config)
		status ndis.Status
		reason string
	}{
		{
			name: "AES-GCM outbound, NDIS names",
			json: `{"Flags":0,"DestAddr":"192.0.2.2","SrcAddr":"192.0.2.1","SecAssoc":[{"Operation":2,"Spi":4096,
				"EncryptionAlgorithm":{"Identifier":8,"KeyLength":20,"AdditionalInfo":12}}],"KeyData":"` + k20 + `"}`,
			check: func(t *testing.T, c sadb.Config) {
				if c.Direction != sadb.Outbound || c.Mode != sadb.Tunnel || c.SPI != 4096 || c.Dst != netip.MustParseAddr("192.0.2.2") ||
					c.Algo.Encryption != ndis.EncryptionAESGCM128 || c.Algo.ICVLen != 12 || len(c.Algo.EncryptionKey) != 20 || c.Algo.AuthenticationKey != nil {
					t.Errorf("config %+v", c)
				}
			},
		},
		{
			name: "inbound by flag, lower-case names, 0x key",
			json: `{"flags":17,"srcaddr":"2001:db8::1","destaddr":"::","secassoc":[{"flags":1,"spi":300,"sequencenumberhighorder":5,
				"encryptionalgorithm":{"identifier":8}}],"keydata":"0x` + k20 + `"}`,
			check: func(t *testing.T, c sadb.Config) {
				if c.Direction != sadb.Inbound || c.Dst.IsValid() || c.Src != netip.MustParseAddr("2001:db8::1") || !c.Algo.ESN || c.SeqHigh != 5 {
					t.Errorf("config %+v", c)
				}
			},
		},
		{
			name: "CBC and HMAC, simple key layout",
			json: `{"direction":"in","SecAssoc":[{"Spi":4096,"EncryptionAlgorithm":{"Identifier":64},
				"AuthenticationAlgorithm":{"Identifier":4,"AdditionalInfo":16}}],"KeyData":"` + k16 + k32 + `"}`,
			check: func(t *testing.T, c sadb.Config) {
				if !bytes.Equal(c.Algo.EncryptionKey, bytes.Repeat([]byte{1}, 16)) || !bytes.Equal(c.Algo.AuthenticationKey, bytes.Repeat([]byte{2}, 32)) || c.Algo.ICVLen != 16 {
					t.Errorf("keys %x / %x, icv %d", []byte(c.Algo.EncryptionKey), []byte(c.Algo.AuthenticationKey), c.Algo.ICVLen)
				}
			},
		},
		{
			name: "CBC and HMAC, NDIS key layout with the MAC key first",
			json: `{"direction":"in","SecAssoc":[{"Spi":4096,"EncryptionAlgorithm":{"Identifier":64,"KeyLength":16,"KeyOffsetBytes":32},
				"AuthenticationAlgorithm":{"Identifier":4,"KeyLength":32}}],"KeyLength":48,"KeyData":"` + k32 + k16 + `"}`,
			check: func(t *testing.T, c sadb.Config) {
				if !bytes.Equal(c.Algo.EncryptionKey, bytes.Repeat([]byte{1}, 16)) || !bytes.Equal(c.Algo.AuthenticationKey, bytes.Repeat([]byte{2}, 32)) {
					t.Errorf("keys %x / %x", []byte(c.Algo.EncryptionKey), []byte(c.Algo.AuthenticationKey))
				}
			},
		},
		{
			name: "NULL encryption with HMAC: Identifier 0 means NONE",
			json: `{"direction":"out","DestAddr":"192.0.2.2","SecAssoc":[{"Spi":4096,"AuthenticationAlgorithm":{"Identifier":2}}],"KeyData":"` + k20 + `"}`,
			check: func(t *testing.T, c sadb.Config) {
				if c.Algo.Encryption != ndis.EncryptionNone || len(c.Algo.AuthenticationKey) != 20 {
					t.Errorf("config %+v", c.Algo)
				}
			},
		},
		{
			name: "vnic extensions",
			json: `{"direction":"in","UdpEspEncapsulation":1,"SecAssoc":[{"Spi":4096,"EncryptionAlgorithm":{"Identifier":8}}],"KeyData":"` + k20 + `",
				"vnic":{"selectors":[{"src":"10.0.0.0/8","dst":"10.1.2.3","proto":"udp","sport":53},{"proto":58}],"replay_window":0,
				"lifetime":{"soft_bytes":1,"hard_bytes":2,"soft_packets":3,"hard_packets":4,"soft_seconds":5,"hard_seconds":6},
				"initial_seq":7,"udp":{"sport":1,"dport":2},"pair":9,"allow_legacy":true}}`,
			check: func(t *testing.T, c sadb.Config) {
				want := []sadb.Selector{
					{Src: netip.MustParsePrefix("10.0.0.0/8"), Dst: netip.MustParsePrefix("10.1.2.3/32"), Proto: 17, SrcPort: 53},
					{Proto: 58},
				}
				if c.Mode != sadb.Transport || !c.Encap.UDP || c.Encap.SrcPort != 1 || c.Encap.DstPort != 2 ||
					c.ReplayWindow != sadb.ReplayOff || c.InitialSeq != 7 || c.Pair != 9 || !c.Algo.AllowLegacy ||
					c.Lifetime != (sadb.Lifetime{SoftBytes: 1, HardBytes: 2, SoftPackets: 3, HardPackets: 4, SoftAdd: 5 * time.Second, HardAdd: 6 * time.Second}) ||
					len(c.Selectors) != 2 || c.Selectors[0] != want[0] || c.Selectors[1] != want[1] {
					t.Errorf("config %+v", c)
				}
			},
		},
		{
			name: "UDP tunnel",
			json: `{"direction":"out","DestAddr":"192.0.2.2","UdpEspEncapsulation":2,"SecAssoc":[{"Spi":4096,"EncryptionAlgorithm":{"Identifier":8}}],"KeyData":"` + k20 + `","vnic":{"mode":"tunnel","replay_window":0}}`,
			check: func(t *testing.T, c sadb.Config) {
				if c.Mode != sadb.Tunnel || !c.Encap.UDP || c.ReplayWindow != 0 {
					t.Errorf("config %+v", c)
				}
			},
		},

		{name: "unknown flag", json: `{"Flags":2,"SecAssoc":[{"Spi":4096}]}`, status: ndis.StatusInvalidParameter, reason: "Flags 0x2 has unknown bits 0x2"},
		{name: "direction conflict", json: `{"Flags":1,"direction":"out"}`, status: ndis.StatusInvalidParameter, reason: `direction is "out" but Flags has IPSEC_OFFLOAD_V2_INBOUND`},
		{name: "bad direction", json: `{"direction":"up"}`, status: ndis.StatusInvalidParameter, reason: `direction: expected "in" or "out", got "up"`},
		{name: "bad address", json: `{"DestAddr":"192.0.2"}`, status: ndis.StatusInvalidParameter, reason: `DestAddr: expected an IPv4 or IPv6 address, got "192.0.2"`},
		{name: "IPv6 flag with IPv4", json: `{"Flags":16,"DestAddr":"192.0.2.1"}`, status: ndis.StatusInvalidParameter, reason: "DestAddr 192.0.2.1 is an IPv4 address but Flags has IPSEC_OFFLOAD_V2_IPv6"},
		{name: "bad mode", json: `{"vnic":{"mode":"tunel"}}`, status: ndis.StatusInvalidParameter, reason: `vnic.mode: expected "tunnel" or "transport", got "tunel"`},
		{name: "UDP transport in tunnel mode", json: `{"UdpEspEncapsulation":1,"vnic":{"mode":"tunnel"}}`, status: ndis.StatusInvalidParameter, reason: "UdpEspEncapsulation 1 (IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT) is for transport mode"},
		{name: "UDP tunnel in transport mode", json: `{"UdpEspEncapsulation":2,"vnic":{"mode":"transport"}}`, status: ndis.StatusInvalidParameter, reason: "UdpEspEncapsulation 2"},
		{name: "UDP combined", json: `{"UdpEspEncapsulation":4}`, status: ndis.StatusNotSupported, reason: "UdpEspEncapsulation 4 (a transport SA combined with a tunnel) is not supported"},
		{name: "UDP unknown", json: `{"UdpEspEncapsulation":3}`, status: ndis.StatusInvalidParameter, reason: "UdpEspEncapsulation 3 is not an encapsulation type"},
		{name: "no SecAssoc", json: `{}`, status: ndis.StatusInvalidParameter, reason: "SecAssoc is missing"},
		{name: "NumExtHdrs 2", json: `{"NumExtHdrs":2,"SecAssoc":[{"Spi":300}]}`, status: ndis.StatusNotSupported, reason: "AH plus ESP bundles (NumExtHdrs 2) are not implemented"},
		{name: "two SecAssoc", json: `{"SecAssoc":[{"Spi":300},{"Operation":1,"Spi":301}]}`, status: ndis.StatusNotSupported, reason: "AH plus ESP bundles"},
		{name: "three SecAssoc", json: `{"SecAssoc":[{},{},{}]}`, status: ndis.StatusInvalidParameter, reason: "SecAssoc has 3 elements"},
		{name: "NumExtHdrs 3", json: `{"NumExtHdrs":3,"SecAssoc":[{}]}`, status: ndis.StatusInvalidParameter, reason: "NumExtHdrs 3: must be 1"},
		{name: "AH", json: `{"SecAssoc":[{"Operation":1,"Spi":300}]}`, status: ndis.StatusNotSupported, reason: "SecAssoc[0].Operation 1 (AH) is not implemented"},
		{name: "bad operation", json: `{"SecAssoc":[{"Operation":3,"Spi":300}]}`, status: ndis.StatusInvalidParameter, reason: "SecAssoc[0].Operation 3: expected 2 (ESP)"},
		{name: "SA flags", json: `{"SecAssoc":[{"Flags":2,"Spi":300}]}`, status: ndis.StatusInvalidParameter, reason: "SecAssoc[0].Flags 0x2 has unknown bits"},
		{name: "no SPI", json: `{"SecAssoc":[{"EncryptionAlgorithm":{"Identifier":8}}]}`, status: ndis.StatusInvalidParameter, reason: "SecAssoc[0].Spi is missing or 0"},
		{name: "no algorithm", json: `{"SecAssoc":[{"Spi":300}]}`, status: ndis.StatusInvalidParameter, reason: "SecAssoc[0] has no algorithm"},
		{name: "unknown encryption", json: `{"SecAssoc":[{"Spi":300,"EncryptionAlgorithm":{"Identifier":3}}]}`, status: ndis.StatusNotSupported, reason: "SecAssoc[0].EncryptionAlgorithm.Identifier 0x3 is not an encryption algorithm vnic knows"},
		{name: "unknown authentication", json: `{"SecAssoc":[{"Spi":300,"AuthenticationAlgorithm":{"Identifier":64}}]}`, status: ndis.StatusNotSupported, reason: "SecAssoc[0].AuthenticationAlgorithm.Identifier 0x40 is not an authentication algorithm"},
		{name: "ICV on the wrong algorithm", json: `{"SecAssoc":[{"Spi":300,"EncryptionAlgorithm":{"Identifier":8},"AuthenticationAlgorithm":{"AdditionalInfo":16}}]}`, status: ndis.StatusInvalidParameter, reason: "SecAssoc[0].AuthenticationAlgorithm.AdditionalInfo is 16 but rfc4106(gcm(aes)) is a combined-mode cipher"},
		{name: "ICV on CBC", json: `{"SecAssoc":[{"Spi":300,"EncryptionAlgorithm":{"Identifier":64,"AdditionalInfo":12},"AuthenticationAlgorithm":{"Identifier":2}}]}`, status: ndis.StatusInvalidParameter, reason: "SecAssoc[0].EncryptionAlgorithm.AdditionalInfo is 12: only a combined-mode cipher"},
		{name: "KeyLength mismatch", json: `{"SecAssoc":[{"Spi":300,"EncryptionAlgorithm":{"Identifier":8}}],"KeyLength":21,"KeyData":"` + k20 + `"}`, status: ndis.StatusInvalidData, reason: "KeyLength is 21 but KeyData holds 20 bytes"},
		{name: "key past the end", json: `{"SecAssoc":[{"Spi":300,"EncryptionAlgorithm":{"Identifier":8,"KeyLength":20,"KeyOffsetBytes":4}}],"KeyData":"` + k20 + `"}`, status: ndis.StatusInvalidData, reason: "SecAssoc[0].EncryptionAlgorithm: the key at KeyOffsetBytes 4 with KeyLength 20 runs past the end of KeyData (20 bytes)"},
		{name: "keys overlap", json: `{"SecAssoc":[{"Spi":300,"EncryptionAlgorithm":{"Identifier":64,"KeyLength":16},"AuthenticationAlgorithm":{"Identifier":4,"KeyLength":32,"KeyOffsetBytes":8}}],"KeyData":"` + k16 + k32 + `"}`, status: ndis.StatusInvalidData, reason: "overlap in KeyData"},
		{name: "offset without length", json: `{"SecAssoc":[{"Spi":300,"EncryptionAlgorithm":{"Identifier":8,"KeyOffsetBytes":2}}],"KeyData":"` + k20 + `"}`, status: ndis.StatusInvalidData, reason: "KeyOffsetBytes is set but KeyLength is 0"},
		{name: "short CBC key", json: `{"SecAssoc":[{"Spi":300,"EncryptionAlgorithm":{"Identifier":256},"AuthenticationAlgorithm":{"Identifier":4}}],"KeyData":"` + k16 + `"}`, status: ndis.StatusInvalidData, reason: "KeyData has 16 bytes, fewer than the 32-byte key of IPSEC_OFFLOAD_V2_ENCRYPTION_AES_CBC_256"},
		{name: "negative replay window", json: `{"SecAssoc":[{"Spi":300,"EncryptionAlgorithm":{"Identifier":8}}],"vnic":{"replay_window":-1}}`, status: ndis.StatusInvalidParameter, reason: "vnic.replay_window: expected 0 (off)"},
		{name: "lifetime overflow", json: `{"SecAssoc":[{"Spi":300,"EncryptionAlgorithm":{"Identifier":8}}],"vnic":{"lifetime":{"hard_seconds":18446744073709551615}}}`, status: ndis.StatusInvalidParameter, reason: "vnic.lifetime: seconds must be at most"},
		{name: "bad selector", json: `{"SecAssoc":[{"Spi":300,"EncryptionAlgorithm":{"Identifier":8}}],"vnic":{"selectors":[{},{"dst":"10.0.0.0/33"}]}}`, status: ndis.StatusInvalidParameter, reason: `vnic.selectors[1].dst: expected a prefix like 10.0.0.0/24, got "10.0.0.0/33"`},
		{name: "bad selector address", json: `{"SecAssoc":[{"Spi":300,"EncryptionAlgorithm":{"Identifier":8}}],"vnic":{"selectors":[{"src":"ten"}]}}`, status: ndis.StatusInvalidParameter, reason: `vnic.selectors[0].src: expected a prefix like 10.0.0.0/24 or an address, got "ten"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b SA
			if err := decode([]byte(tt.json), &b, 0); err != nil {
				t.Fatalf("decode: %v", err)
			}
			c, err := b.Config()
			if tt.check != nil {
				if err != nil {
					t.Fatalf("Config: %v", err)
				}
				tt.check(t, c)
				return
			}
			if ndis.StatusOf(err) != tt.status || err == nil || !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("Config error = %v (%v), want %v %q", err, ndis.StatusOf(err), tt.status, tt.reason)
			}
		})
	}
}

// TestKeyJSON checks the Key encoding and that its decoding errors never
// quote the input.
func TestKeyJSON(t *testing.T) {
	k := Key{0xde, 0xad, 0xbe, 0xef}
	b, _ := json.Marshal(k)
	if string(b) != `"deadbeef"` {
		t.Errorf("Marshal = %s", b)
	}
	for _, in := range []string{`"deadbeef"`, `"0xDEADBEEF"`} {
		var got Key
		if err := json.Unmarshal([]byte(in), &got); err != nil || !bytes.Equal(got, k) {
			t.Errorf("Unmarshal %s = %x, %v", in, []byte(got), err)
		}
	}
	for _, in := range []string{`"deadbee"`, `"deadbeeg"`, `"dead\"beef"`, `12`, `"0x"x"`} {
		var got Key
		err := json.Unmarshal([]byte(in), &got)
		if err == nil {
			if in == `"0x"x"` {
				continue // not JSON: the decoder refuses it before Key sees it
			}
			t.Errorf("Unmarshal %s: no error", in)
			continue
		}
		if strings.Contains(err.Error(), "dead") || strings.Contains(err.Error(), "beef") {
			t.Errorf("error quotes the key: %v", err)
		}
	}
}
