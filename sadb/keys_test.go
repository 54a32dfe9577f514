package sadb

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"vnic/keyhist"
	"vnic/ndis"
)

// TestOutboundKeyNeverReused: with a key history, a key that protected an
// outbound SA is refused for any later outbound SA — in the same batch,
// after a delete, after a restart — with INVALID_PARAMETER and a reason;
// inbound SAs may share it (the peer sends with it), and a full device
// does not use a key up.
func TestOutboundKeyNeverReused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vnic0.keys")
	open := func() *Table {
		h, err := keyhist.Open(path, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		tab := New(TableConfig{Capacity: 3, Keys: h})
		return tab
	}
	tab := open()
	withKey := func(c Config, b byte) Config {
		k := make([]byte, 20)
		for i := range k {
			k[i] = b + byte(i)
		}
		c.Algo.EncryptionKey = k
		return c
	}
	res, st := tab.Add([]Config{withKey(outCfg(0x100+1, "10.0.0.1"), 1), withKey(outCfg(0x100+2, "10.0.0.2"), 1), withKey(inCfg(0x100+3, "10.0.0.9"), 1)})
	if st != ndis.StatusSuccess || res[0].Err != nil || res[2].Err != nil {
		t.Fatalf("first outbound and inbound with the same key: %v %v %v", st, res[0].Err, res[2].Err)
	}
	if err := res[1].Err; ndis.StatusOf(err) != ndis.StatusInvalidParameter || !strings.Contains(err.Error(), "element 1") || !strings.Contains(err.Error(), "fresh key") {
		t.Errorf("second outbound SA with the key in one batch: %v", err)
	}
	tab.Delete([]Handle{res[0].Handle})
	if res, _ := tab.Add([]Config{withKey(outCfg(0x100+4, "10.0.0.4"), 1)}); ndis.StatusOf(res[0].Err) != ndis.StatusInvalidParameter || !strings.Contains(res[0].Err.Error(), "already used") {
		t.Errorf("key of a deleted SA: %v", res[0].Err)
	}
	// Full device: the refused element does not use its key up.
	mustAdd(t, tab, withKey(outCfg(0x100+5, "10.0.0.5"), 2))
	mustAdd(t, tab, withKey(outCfg(0x100+6, "10.0.0.6"), 3))
	if res, st := tab.Add([]Config{withKey(outCfg(0x100+7, "10.0.0.7"), 4)}); st != ndis.StatusResources {
		t.Fatalf("full device: %v %v", st, res[0].Err)
	}
	tab.Delete(tab.handles())

	tab = open() // a restarted daemon
	for b, want := range map[byte]bool{1: false, 2: false, 3: false, 4: true} {
		res, _ := tab.Add([]Config{withKey(outCfg(0x100+uint32(10+b), "10.0.1.1"), b)})
		if (res[0].Err == nil) != want {
			t.Errorf("after a restart, key %d: %v (want accepted %v)", b, res[0].Err, want)
		}
		tab.Delete(tab.handles())
	}
}

// failingKeys is a key history whose disk fails.
type failingKeys struct{}

func (failingKeys) Use(_, _ []byte) error { return errors.New("key history: disk full") }

// TestKeyHistoryFailure: a key that cannot be recorded is not used (a
// restart would not know it): the add fails with NDIS_STATUS_FAILURE.
func TestKeyHistoryFailure(t *testing.T) {
	tab := New(TableConfig{Capacity: 4, Keys: failingKeys{}})
	res, st := tab.Add([]Config{outCfg(0x100+1, "10.0.0.1"), inCfg(0x100+2, "10.0.0.1")})
	if st != ndis.StatusSuccess || res[1].Err != nil {
		t.Fatalf("inbound SA: %v %v", st, res[1].Err)
	}
	if err := res[0].Err; ndis.StatusOf(err) != ndis.StatusFailure || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("outbound SA: %v", err)
	}
	if tab.Len() != 1 {
		t.Errorf("Len %d, want 1", tab.Len())
	}
}

// handles returns the handles of every SA in t.
func (t *Table) handles() []Handle {
	var hs []Handle
	for _, sa := range t.List() {
		hs = append(hs, sa.Handle)
	}
	return hs
}
