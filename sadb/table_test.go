package sadb

import (
	"bytes"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	"vnic/algo"
	"vnic/ndis"
)

func TestAddPartialSuccess(t *testing.T) {
	tab := New(TableConfig{Capacity: 10})
	good := outCfg(1000, "10.0.0.1")
	ah := outCfg(1001, "10.0.0.1")
	ah.Proto = ndis.OperationAH
	res, st := tab.Add([]Config{good, good, ah})
	if st != ndis.StatusSuccess {
		t.Fatalf("status %v, want success", st)
	}
	if len(res) != 3 {
		t.Fatalf("%d results, want 3", len(res))
	}
	if res[0].Handle == 0 || res[0].Err != nil {
		t.Errorf("element 0: handle %d, err %v; want a handle", res[0].Handle, res[0].Err)
	}
	if res[1].Handle != 0 {
		t.Errorf("element 1 (duplicate): handle %d, want 0", res[1].Handle)
	}
	wantErr(t, res[1].Err, ndis.StatusInvalidParameter, "element 1:", "SPI 1000", "10.0.0.1", "already exists")
	if i, ok := res[1].Err.(*ndis.Error).Element(); !ok || i != 1 {
		t.Errorf("element 1's error is about element %d (%v)", i, ok)
	}
	if res[2].Handle != 0 {
		t.Errorf("element 2 (AH): handle %d, want 0", res[2].Handle)
	}
	wantErr(t, res[2].Err, ndis.StatusNotSupported, "element 2:", "AH is not implemented")
	if tab.Len() != 1 {
		t.Errorf("Len %d, want 1", tab.Len())
	}
}

func TestAddBatchStatus(t *testing.T) {
	ah := outCfg(1001, "10.0.0.1")
	ah.Proto = ndis.OperationAH
	low := outCfg(5, "10.0.0.1")
	for _, tc := range []struct {
		name string
		cfgs []Config
		want ndis.Status
	}{
		{"empty", nil, ndis.StatusInvalidParameter},
		{"first failure decides", []Config{ah, low}, ndis.StatusNotSupported},
		{"first failure decides 2", []Config{low, ah}, ndis.StatusInvalidParameter},
		{"one good is enough", []Config{low, ah, outCfg(300, "10.0.0.1")}, ndis.StatusSuccess},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := New(TableConfig{Capacity: 10})
			res, st := tab.Add(tc.cfgs)
			if st != tc.want {
				t.Errorf("status %v, want %v", st, tc.want)
			}
			if len(res) != len(tc.cfgs) {
				t.Errorf("%d results for %d elements", len(res), len(tc.cfgs))
			}
			if st != ndis.StatusSuccess && tab.Len() != 0 {
				t.Errorf("failed batch left %d SAs", tab.Len())
			}
		})
	}
}

func TestAddValidation(t *testing.T) {
	mod := func(c Config, f func(*Config)) Config { f(&c); return c }
	out := outCfg(1000, "10.0.0.1")
	in := inCfg(1000, "10.0.0.1")
	const inv, nots = ndis.StatusInvalidParameter, ndis.StatusNotSupported
	for _, tc := range []struct {
		name string
		cfg  Config
		st   ndis.Status // 0: must succeed
		sub  string
	}{
		{"outbound ok", out, 0, ""},
		{"inbound ok", in, 0, ""},
		{"proto 0 is ESP", mod(out, func(c *Config) { c.Proto = 0 }), 0, ""},
		{"AH", mod(out, func(c *Config) { c.Proto = ndis.OperationAH }), nots, "offload ESP only"},
		{"unknown operation", mod(out, func(c *Config) { c.Proto = 9 }), inv, "unknown operation 9"},
		{"SPI 0", mod(out, func(c *Config) { c.SPI = 0 }), inv, "SPI 0 is reserved"},
		{"SPI 255", mod(out, func(c *Config) { c.SPI = 255 }), inv, "SPI 255 is reserved"},
		{"SPI 256", mod(out, func(c *Config) { c.SPI = 256 }), 0, ""},
		{"bad direction", mod(out, func(c *Config) { c.Direction = 7 }), inv, "unknown direction 7"},
		{"bad mode", mod(out, func(c *Config) { c.Mode = 7 }), inv, "unknown mode 7"},
		{"mixed families", mod(out, func(c *Config) { c.Src = addr("2001:db8::1") }), inv, "different address families"},
		{"outbound without dst", mod(out, func(c *Config) { c.Dst = netip.Addr{} }), inv, "needs a destination"},
		{"inbound wildcard dst", mod(in, func(c *Config) { c.Dst = netip.Addr{} }), 0, ""},
		{"zone", mod(out, func(c *Config) { c.Dst = addr("fe80::1%eth0") }), inv, "zone"},
		{"v6", mod(out, func(c *Config) { c.Src, c.Dst = addr("2001:db8::1"), addr("2001:db8::2") }), 0, ""},
		{"ports without UDP", mod(out, func(c *Config) { c.Encap.DstPort = 4500 }), inv, "UDP encapsulation is off"},
		{"unmasked selector", mod(out, func(c *Config) { c.Selectors = []Selector{{Dst: pfx("10.1.2.3/16")}} }), inv, "selector 0: destination prefix 10.1.2.3/16 has host bits set: write 10.1.0.0/16"},
		{"invalid selector prefix", mod(out, func(c *Config) {
			c.Selectors = []Selector{{}, {Src: netip.PrefixFrom(addr("10.0.0.0"), 40)}}
		}), inv, "selector 1: source prefix"},
		{"selector families", mod(out, func(c *Config) {
			c.Selectors = []Selector{{Src: pfx("10.0.0.0/8"), Dst: pfx("2001:db8::/32")}}
		}), inv, "different address families"},
		{"selector ports without proto", mod(out, func(c *Config) { c.Selectors = []Selector{{DstPort: 80}} }), inv, "ports need protocol"},
		{"selector ports with ICMP", mod(out, func(c *Config) { c.Selectors = []Selector{{Proto: 1, DstPort: 80}} }), inv, "got protocol 1"},
		{"selector ports with TCP", mod(out, func(c *Config) { c.Selectors = []Selector{{Proto: 6, DstPort: 80}} }), 0, ""},
		{"initial seq too big", mod(out, func(c *Config) { c.InitialSeq = 1 << 32 }), inv, "does not fit in 32 bits"},
		{"seq high without ESN", mod(out, func(c *Config) { c.SeqHigh = 1 }), inv, "SequenceNumberHighOrder is 1"},
		{"seq high with ESN", mod(out, func(c *Config) { c.SeqHigh = 1; c.Algo.ESN = true }), 0, ""},
		{"outbound replay window", mod(out, func(c *Config) { c.ReplayWindow = 64 }), inv, "inbound SAs only"},
		{"inbound initial seq", mod(in, func(c *Config) { c.InitialSeq = 5 }), 0, ""},
		{"ESN without window", mod(in, func(c *Config) { c.Algo.ESN = true; c.ReplayWindow = 0 }), inv, "anti-replay window"},
		{"window 0 without ESN", mod(in, func(c *Config) { c.ReplayWindow = 0 }), 0, ""},
		{"window 16", mod(in, func(c *Config) { c.ReplayWindow = 16 }), inv, "replay window size 16"},
		{"window negative", mod(in, func(c *Config) { c.ReplayWindow = -2 }), inv, "replay window size -2"},
		{"window off", mod(in, func(c *Config) { c.ReplayWindow = ReplayOff }), 0, ""},
		{"window off with ESN", mod(in, func(c *Config) { c.Algo.ESN = true; c.ReplayWindow = ReplayOff }), inv, "extended sequence numbers need"},
		{"window huge", mod(in, func(c *Config) { c.ReplayWindow = 1 << 20 }), inv, "out of range"},
		{"ESN window 32", mod(in, func(c *Config) { c.Algo.ESN = true; c.ReplayWindow = 32 }), 0, ""},
		{"soft above hard", mod(out, func(c *Config) { c.Lifetime = Lifetime{SoftBytes: 10, HardBytes: 5} }), inv, "soft byte limit 10"},
		{"soft time above hard", mod(out, func(c *Config) { c.Lifetime = Lifetime{SoftAdd: time.Hour, HardAdd: time.Minute} }), inv, "soft lifetime 1h0m0s"},
		{"negative time", mod(out, func(c *Config) { c.Lifetime = Lifetime{HardAdd: -time.Second} }), inv, "negative"},
		{"soft only", mod(out, func(c *Config) { c.Lifetime = Lifetime{SoftPackets: 10} }), 0, ""},
		{"bad key length", mod(out, func(c *Config) { c.Algo.EncryptionKey = c.Algo.EncryptionKey[:16] }), inv, "AES-GCM-128 needs a 20-byte key"},
		{"legacy DES", mod(out, func(c *Config) {
			c.Algo = algo.Spec{Encryption: ndis.EncryptionDESCBC, EncryptionKey: make([]byte, 8),
				Authentication: ndis.AuthenticationSHA256, AuthenticationKey: make([]byte, 32)}
		}), nots, "legacy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := New(TableConfig{Capacity: 4})
			res, st := tab.Add([]Config{outCfg(2000, "192.0.2.9"), tc.cfg})
			if st != ndis.StatusSuccess {
				t.Fatalf("batch status %v: the first element is valid", st)
			}
			r := res[1]
			if tc.st == 0 {
				if r.Err != nil || r.Handle == 0 {
					t.Fatalf("handle %d, err %v; want success", r.Handle, r.Err)
				}
				return
			}
			if r.Handle != 0 {
				t.Errorf("handle %d, want 0", r.Handle)
			}
			wantErr(t, r.Err, tc.st, "element 1: ", tc.sub)
			if tab.Len() != 1 {
				t.Errorf("Len %d, want 1", tab.Len())
			}
		})
	}
}

func TestAddDefaultsAndCopies(t *testing.T) {
	tab := New(TableConfig{Capacity: 4})
	c := outCfg(1000, "10.0.0.1", Selector{Dst: pfx("10.9.0.0/16")})
	c.Proto = 0
	c.Encap = Encap{UDP: true, SrcPort: 0, DstPort: 0}
	h := mustAdd(t, tab, c)[0]
	sa := tab.Get(h)
	if sa == nil {
		t.Fatal("Get returned nil for a new handle")
	}
	if sa.Config.Encap.SrcPort != 4500 || sa.Config.Encap.DstPort != 4500 {
		t.Errorf("UDP ports %d, %d; want 4500, 4500", sa.Config.Encap.SrcPort, sa.Config.Encap.DstPort)
	}
	if sa.Config.Proto != ndis.OperationESP {
		t.Errorf("Proto %d, want ESP", sa.Config.Proto)
	}
	// The caller reuses its buffers: the SA must not change.
	c.Algo.EncryptionKey[0] ^= 0xFF
	c.Selectors[0].Dst = pfx("172.16.0.0/12")
	if sa.Config.Algo.EncryptionKey[0] != 0x42 {
		t.Error("the SA shares the caller's key buffer")
	}
	if sa.Config.Selectors[0].Dst != pfx("10.9.0.0/16") || sa.Selectors()[0].Dst != pfx("10.9.0.0/16") {
		t.Error("the SA shares the caller's selector slice")
	}
	if sa.Added().IsZero() {
		t.Error("Added not set")
	}
}

func TestImpliedSelectors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mode     Mode
		src, dst string
		want     []Selector
	}{
		{"tunnel", Tunnel, "192.0.2.1", "198.51.100.1", []Selector{{}}},
		{"transport v4", Transport, "192.0.2.1", "198.51.100.1", []Selector{{Src: pfx("192.0.2.1/32"), Dst: pfx("198.51.100.1/32")}}},
		{"transport v6", Transport, "2001:db8::1", "2001:db8::2", []Selector{{Src: pfx("2001:db8::1/128"), Dst: pfx("2001:db8::2/128")}}},
		{"transport any src", Transport, "", "198.51.100.1", []Selector{{Dst: pfx("198.51.100.1/32")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := New(TableConfig{Capacity: 4})
			c := outCfg(1000, tc.dst)
			c.Mode, c.Src = tc.mode, addr(tc.src)
			sa := tab.Get(mustAdd(t, tab, c)[0])
			if !slices.Equal(sa.Selectors(), tc.want) {
				t.Errorf("Selectors %v, want %v", sa.Selectors(), tc.want)
			}
			if len(sa.Config.Selectors) != 0 {
				t.Errorf("Config.Selectors %v, want none (as given)", sa.Config.Selectors)
			}
		})
	}
}

func TestCapacity(t *testing.T) {
	tab := New(TableConfig{Capacity: 2})
	res, st := tab.Add([]Config{outCfg(1000, "10.0.0.1"), outCfg(1001, "10.0.0.1"), outCfg(1002, "10.0.0.1")})
	if st != ndis.StatusSuccess {
		t.Fatalf("status %v, want success", st)
	}
	for i := 0; i < 2; i++ {
		if res[i].Err != nil || res[i].Handle == 0 {
			t.Errorf("element %d: handle %d, %v", i, res[i].Handle, res[i].Err)
		}
	}
	if res[2].Handle != 0 {
		t.Errorf("element 2 got handle %d in a full table", res[2].Handle)
	}
	wantErr(t, res[2].Err, ndis.StatusResources, "element 2: ", "device full: SaOffloadCapacity 2 reached")

	// Full: a whole batch fails with RESOURCES.
	res2, st := tab.Add([]Config{outCfg(1003, "10.0.0.1")})
	if st != ndis.StatusResources || res2[0].Handle != 0 {
		t.Errorf("full table: status %v, handle %d; want RESOURCES, 0", st, res2[0].Handle)
	}
	if tab.Len() != 2 || tab.Capacity() != 2 {
		t.Errorf("Len %d Capacity %d, want 2 2", tab.Len(), tab.Capacity())
	}

	// After a delete one more fits, and only one.
	if errs := tab.Delete([]Handle{res[0].Handle}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	res3, st := tab.Add([]Config{outCfg(1004, "10.0.0.1"), outCfg(1005, "10.0.0.1")})
	if st != ndis.StatusSuccess || res3[0].Handle == 0 || res3[1].Handle != 0 {
		t.Errorf("after delete: status %v, handles %d %d; want success, one handle", st, res3[0].Handle, res3[1].Handle)
	}

	if _, st := New(TableConfig{Capacity: 0}).Add([]Config{outCfg(1000, "10.0.0.1")}); st != ndis.StatusResources {
		t.Errorf("capacity 0: status %v, want RESOURCES", st)
	}
}

func TestHandlesNeverReused(t *testing.T) {
	tab := New(TableConfig{Capacity: 100})
	var all []Handle
	for round := 0; round < 5; round++ {
		hs := mustAdd(t, tab, outCfg(1000, "10.0.0.1"), inCfg(1000, "10.0.0.1"), outCfg(1001, "10.0.0.1"))
		all = append(all, hs...)
		for _, e := range tab.Delete(hs) {
			if e != nil {
				t.Fatal(e)
			}
		}
	}
	for i, h := range all {
		if h == 0 || (i > 0 && h <= all[i-1]) {
			t.Fatalf("handles %v are not non-zero and strictly increasing", all)
		}
		if tab.Get(h) != nil {
			t.Errorf("Get(%d) of a deleted handle is not nil", h)
		}
	}
	errs := tab.Delete([]Handle{all[0], 0, 987654})
	for i, h := range []Handle{all[0], 0, 987654} {
		wantErr(t, errs[i], ndis.StatusInvalidParameter, "unknown handle "+strconv.FormatUint(uint64(h), 10))
	}
}

func TestDeleteMixed(t *testing.T) {
	tab := New(TableConfig{Capacity: 10})
	hs := mustAdd(t, tab, outCfg(1000, "10.0.0.1"), outCfg(1001, "10.0.0.1"))
	errs := tab.Delete([]Handle{hs[0], 77, hs[0], hs[1]})
	if errs[0] != nil || errs[3] != nil {
		t.Errorf("known handles: %v, %v", errs[0], errs[3])
	}
	wantErr(t, errs[1], ndis.StatusInvalidParameter, "unknown handle 77")
	wantErr(t, errs[2], ndis.StatusInvalidParameter, "unknown handle")
	if tab.Len() != 0 || len(tab.List()) != 0 {
		t.Errorf("Len %d, List %d after deleting all", tab.Len(), len(tab.List()))
	}
	if errs := tab.Delete(nil); len(errs) != 0 {
		t.Errorf("Delete(nil) = %v", errs)
	}
}

func TestDuplicates(t *testing.T) {
	tab := New(TableConfig{Capacity: 100})
	first := mustAdd(t, tab, outCfg(1000, "10.0.0.1"), inCfg(1000, "10.0.0.1"), inCfg(1000, ""))
	for _, tc := range []struct {
		name string
		cfgs []Config
		dup  []bool
	}{
		{"across batches", []Config{outCfg(1000, "10.0.0.1"), inCfg(1000, "10.0.0.1"), inCfg(1000, "")}, []bool{true, true, true}},
		{"other destination", []Config{outCfg(1000, "10.0.0.2"), inCfg(1000, "10.0.0.2")}, []bool{false, false}},
		{"other SPI", []Config{outCfg(1001, "10.0.0.1"), inCfg(1001, "")}, []bool{false, false}},
		{"within a batch", []Config{outCfg(2000, "10.0.0.1"), outCfg(2000, "10.0.0.1"), inCfg(2000, ""), inCfg(2000, "")}, []bool{false, true, false, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, _ := tab.Add(tc.cfgs)
			for i, r := range res {
				if tc.dup[i] {
					wantErr(t, r.Err, ndis.StatusInvalidParameter, "already exists")
					if r.Handle != 0 {
						t.Errorf("element %d: duplicate got handle %d", i, r.Handle)
					}
				} else if r.Err != nil {
					t.Errorf("element %d: %v", i, r.Err)
				}
			}
		})
	}
	// After a delete the key is free again.
	tab.Delete(first[:1])
	mustAdd(t, tab, outCfg(1000, "10.0.0.1"))
}

func TestDeleteWipes(t *testing.T) {
	tab := New(TableConfig{Capacity: 10})
	c := outCfg(1000, "10.0.0.1")
	c.Algo = algo.Spec{
		Encryption: ndis.EncryptionAESCBC128, EncryptionKey: bytes.Repeat([]byte{7}, 16),
		Authentication: ndis.AuthenticationSHA256, AuthenticationKey: bytes.Repeat([]byte{9}, 32),
	}
	in := inCfg(1000, "10.0.0.1")
	hs := mustAdd(t, tab, c, in)
	sa, isa := tab.Get(hs[0]), tab.Get(hs[1])
	ek, ak := sa.Config.Algo.EncryptionKey, sa.Config.Algo.AuthenticationKey
	if !sa.Alive() || tab.LookupInbound(1000, addr("10.0.0.1")) != isa {
		t.Fatal("SAs not alive and reachable after Add")
	}
	if errs := tab.Delete(hs); errs[0] != nil || errs[1] != nil {
		t.Fatal(errs)
	}
	for _, k := range [][]byte{ek, ak, isa.Config.Algo.EncryptionKey} {
		if len(k) == 0 || !bytes.Equal(k, make([]byte, len(k))) {
			t.Errorf("key %x not zeroed after Delete", k)
		}
	}
	if sa.Alive() || isa.Alive() {
		t.Error("deleted SAs still Alive")
	}
	if c.Algo.EncryptionKey[0] != 7 || c.Algo.AuthenticationKey[0] != 9 {
		t.Error("Delete wiped the caller's key buffers")
	}

	// The cipher itself is wiped too.
	withFakeCipher(t)
	h := mustAdd(t, tab, outCfg(1001, "10.0.0.1"))[0]
	fc := tab.Get(h).Cipher.(*fakeCipher)
	tab.Delete([]Handle{h})
	if !fc.wiped.Load() {
		t.Error("Cipher.Wipe not called on Delete")
	}
}

func TestRealCipherAESGCM128(t *testing.T) {
	tab := New(TableConfig{Capacity: 2})
	c := outCfg(1000, "10.0.0.1")
	c.Algo = algo.Spec{Encryption: ndis.EncryptionAESGCM128, EncryptionKey: bytes.Repeat([]byte{1}, 16+4)}
	sa := tab.Get(mustAdd(t, tab, c)[0])
	if _, fake := sa.Cipher.(*fakeCipher); fake || sa.Cipher.ICVLen() != 16 || sa.Cipher.IVLen() != 8 {
		t.Errorf("cipher %q ICV %d IV %d: want the real AES-GCM-128 (16, 8)", sa.Cipher.Name(), sa.Cipher.ICVLen(), sa.Cipher.IVLen())
	}
}

func TestCapacityFullWipesUnusedCipher(t *testing.T) {
	withFakeCipher(t)
	var made []*fakeCipher
	newCipher = func(s algo.Spec) (algo.Cipher, error) {
		c, err := fakeNew(s)
		made = append(made, c.(*fakeCipher))
		return c, err
	}
	tab := New(TableConfig{Capacity: 1})
	res, _ := tab.Add([]Config{outCfg(1000, "10.0.0.1"), outCfg(1001, "10.0.0.1")})
	if res[1].Handle != 0 || len(made) != 2 {
		t.Fatalf("handle %d, %d ciphers made", res[1].Handle, len(made))
	}
	if made[0].wiped.Load() || !made[1].wiped.Load() {
		t.Errorf("wiped: added %v, refused %v; want false, true", made[0].wiped.Load(), made[1].wiped.Load())
	}
}

func TestPairing(t *testing.T) {
	tab := New(TableConfig{Capacity: 20})
	o := mustAdd(t, tab, outCfg(1000, "10.0.0.1"))[0]
	c := inCfg(2000, "10.0.0.2")
	c.Pair = o
	i := mustAdd(t, tab, c)[0]
	so, si := tab.Get(o), tab.Get(i)
	if tab.Paired(so) != si || tab.Paired(si) != so {
		t.Fatalf("Paired: %p %p, want %p %p", tab.Paired(so), tab.Paired(si), si, so)
	}
	if tab.Paired(nil) != nil {
		t.Error("Paired(nil) != nil")
	}

	bad := func(pair Handle, dir Direction) Config {
		c := inCfg(3000, "10.0.0.3")
		if dir == Outbound {
			c = outCfg(3000, "10.0.0.3")
		}
		c.Pair = pair
		return c
	}
	o2 := mustAdd(t, tab, outCfg(1001, "10.0.0.1"))[0]
	for _, tc := range []struct {
		name string
		cfg  Config
		sub  string
	}{
		{"unknown", bad(9999, Inbound), "pair handle 9999 is unknown"},
		{"same direction", bad(o2, Outbound), "opposite direction"},
		{"already paired", bad(o, Inbound), "already paired"},
		{"already paired from the other side", bad(i, Outbound), "already paired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, st := tab.Add([]Config{tc.cfg})
			if st != ndis.StatusInvalidParameter {
				t.Errorf("status %v", st)
			}
			wantErr(t, res[0].Err, ndis.StatusInvalidParameter, tc.sub)
		})
	}

	// Two elements of one batch may not pair with the same SA.
	a, b := bad(o2, Inbound), bad(o2, Inbound)
	b.SPI = 3001
	res, _ := tab.Add([]Config{a, b})
	if res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	wantErr(t, res[1].Err, ndis.StatusInvalidParameter, "element 1:", "already paired")
	if tab.Paired(tab.Get(o2)) != tab.Get(res[0].Handle) {
		t.Error("batch pairing not linked back")
	}

	// Deleting one side unpairs the other, which stays.
	tab.Delete([]Handle{o})
	if tab.Paired(si) != nil || tab.Paired(so) != nil {
		t.Error("pairing survives Delete")
	}
	if !si.Alive() || tab.Get(i) != si {
		t.Error("the twin was removed with the deleted SA")
	}
	// The twin may pair again.
	c2 := outCfg(1002, "10.0.0.1")
	c2.Pair = i
	o3 := mustAdd(t, tab, c2)[0]
	if tab.Paired(si) != tab.Get(o3) {
		t.Error("re-pairing failed")
	}
}

func TestUpdateESN(t *testing.T) {
	tab := New(TableConfig{Capacity: 10})
	oc := outCfg(1000, "10.0.0.1")
	oc.Algo.ESN = true
	oc.SeqHigh = 2
	oc.InitialSeq = 7
	ic := inCfg(1000, "10.0.0.1")
	ic.Algo.ESN = true
	hs := mustAdd(t, tab, oc, ic, outCfg(1001, "10.0.0.1"))
	o, in, plain := hs[0], hs[1], hs[2]

	if seq, _, err := tab.Get(o).Out.Next(); err != nil || seq != 2<<32|7 {
		t.Fatalf("first outbound number %#x, %v; want 2<<32|7", seq, err)
	}
	if err := tab.UpdateESN(o, 1000, 5); err != nil {
		t.Fatalf("forward: %v", err)
	}
	if seq, _, _ := tab.Get(o).Out.Next(); seq != 5<<32|8 {
		t.Errorf("after UpdateESN(5) next %#x, want 5<<32|8 (new high bits, the low ones go on)", seq)
	}
	if err := tab.UpdateESN(in, 1000, 9); err != nil {
		t.Fatalf("inbound: %v", err)
	}
	if top := tab.Get(in).In.Top(); top>>32 != 9 {
		t.Errorf("inbound top %#x, want high bits 9", top)
	}

	const inv = ndis.StatusInvalidParameter
	for _, tc := range []struct {
		name string
		h    Handle
		spi  uint32
		hi   uint32
		sub  string
	}{
		{"backwards", o, 1000, 3, "outbound sequence numbers never go backwards: high bits are 5, asked for 3"},
		{"inbound backwards", in, 1000, 8, "the replay window never moves back (numbers already received would be accepted again): high bits are 9, asked for 8"},
		{"unknown handle", 4242, 1000, 1, "unknown handle 4242"},
		{"null handle", 0, 1000, 1, "unknown handle 0"},
		{"SPI mismatch", o, 1001, 6, "not 1001"},
		{"not ESN", plain, 1001, 1, "does not use extended sequence numbers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, tab.UpdateESN(tc.h, tc.spi, tc.hi), inv, tc.sub)
		})
	}
	tab.Delete([]Handle{o})
	wantErr(t, tab.UpdateESN(o, 1000, 6), inv, "unknown handle")
}

func TestOutboundFirstSeq(t *testing.T) {
	tab := New(TableConfig{Capacity: 10, WarnAt: 3})
	a := outCfg(1000, "10.0.0.1")
	b := outCfg(1001, "10.0.0.1")
	b.InitialSeq = 1<<32 - 4
	hs := mustAdd(t, tab, a, b)
	if seq, _, _ := tab.Get(hs[0]).Out.Next(); seq != 1 {
		t.Errorf("InitialSeq 0: first %d, want 1", seq)
	}
	// b starts at 2^32-4: the warning (WarnAt 3) comes at 2^32-4.
	seq, warn, err := tab.Get(hs[1]).Out.Next()
	if seq != 1<<32-4 || !warn || err != nil {
		t.Errorf("first of b: %d warn %v err %v; want %d, true", seq, warn, err, uint64(1<<32-4))
	}
}

func TestInboundWindowStart(t *testing.T) {
	tab := New(TableConfig{Capacity: 10})
	a := inCfg(1000, "10.0.0.1")
	b := inCfg(1001, "10.0.0.1")
	b.Algo.ESN, b.SeqHigh, b.InitialSeq = true, 3, 0xfffffffd
	hs := mustAdd(t, tab, a, b)
	if top := tab.Get(hs[0]).In.Top(); top != 0 {
		t.Errorf("default window top %#x, want 0", top)
	}
	if top := tab.Get(hs[1]).In.Top(); top != 3<<32|0xfffffffd {
		t.Errorf("window top %#x, want 3<<32|0xfffffffd", top)
	}
}

func TestListOrder(t *testing.T) {
	tab := New(TableConfig{Capacity: 1000})
	var cfgs []Config
	for i := 0; i < 600; i++ {
		cfgs = append(cfgs, outCfg(uint32(1000+i), "10.0.0.1"))
	}
	hs := mustAdd(t, tab, cfgs...)
	tab.Delete(hs[:300])
	tab.Delete(hs[400:500])
	want := append(slices.Clone(hs[300:400]), hs[500:]...)
	more := mustAdd(t, tab, outCfg(5000, "10.0.0.1"))
	want = append(want, more...)
	got := tab.List()
	if len(got) != len(want) || tab.Len() != len(want) {
		t.Fatalf("List has %d, Len %d, want %d", len(got), tab.Len(), len(want))
	}
	for i, sa := range got {
		if sa.Handle != want[i] {
			t.Fatalf("List[%d] = handle %d, want %d", i, sa.Handle, want[i])
		}
	}
	tab.Delete(want)
	if len(tab.List()) != 0 || tab.Len() != 0 {
		t.Error("table not empty after deleting all")
	}
	// The handle index starts over cleanly after emptying.
	h := mustAdd(t, tab, outCfg(6000, "10.0.0.1"))[0]
	if tab.Get(h) == nil || len(tab.List()) != 1 {
		t.Error("Get/List broken after emptying the table")
	}
}

// TestDefaultReplayWindow: an inbound SA without a window gets the table's
// default, ReplayOff turns protection off.
func TestDefaultReplayWindow(t *testing.T) {
	tab := New(TableConfig{Capacity: 4, DefaultReplayWindow: 128})
	c1 := inCfg(0x1001, "192.0.2.1")
	c1.ReplayWindow = 0
	c2 := inCfg(0x1002, "192.0.2.1")
	c2.ReplayWindow = ReplayOff
	res, st := tab.Add([]Config{c1, c2})
	if st != ndis.StatusSuccess || res[0].Err != nil || res[1].Err != nil {
		t.Fatalf("add: %v %v %v", st, res[0].Err, res[1].Err)
	}
	if got := tab.Get(res[0].Handle).In.Size(); got != 128 {
		t.Errorf("default window %d, want 128", got)
	}
	if got := tab.Get(res[1].Handle).In.Size(); got != 0 {
		t.Errorf("ReplayOff window %d, want 0", got)
	}
}
