package sadb

import "fmt"

// Check verifies the table's invariants and returns the first one broken:
// no more SAs than the capacity, List in handle order and agreeing with Len
// and Get, no listed SA deleted, every pairing mutual, between opposite
// directions and with an SA still held, and every inbound SA with a
// destination found by LookupInbound. The fuzz targets of sadb and of the
// OID channel call it after every step; call it only while no one writes.
func (t *Table) Check() error {
	list := t.List()
	if len(list) != t.Len() || len(list) > t.Capacity() {
		return fmt.Errorf("List has %d SAs, Len %d, Capacity %d", len(list), t.Len(), t.Capacity())
	}
	for i, sa := range list {
		switch {
		case i > 0 && sa.Handle <= list[i-1].Handle:
			return fmt.Errorf("List is not in handle order: %d after %d", sa.Handle, list[i-1].Handle)
		case t.Get(sa.Handle) != sa:
			return fmt.Errorf("SA %d is listed but Get does not return it", sa.Handle)
		case sa.dead.Load():
			return fmt.Errorf("SA %d is listed but deleted", sa.Handle)
		}
		if p := t.Paired(sa); p != nil && (t.Get(p.Handle) != p || t.Paired(p) != sa || p.Config.Direction == sa.Config.Direction) {
			return fmt.Errorf("SA %d is paired with SA %d, which is gone, not paired back or of the same direction", sa.Handle, p.Handle)
		}
		if c := &sa.Config; c.Direction == Inbound && c.Dst.IsValid() && t.LookupInbound(c.SPI, c.Dst) != sa {
			return fmt.Errorf("inbound SA %d (SPI %#x, destination %v) is not found by LookupInbound", sa.Handle, c.SPI, c.Dst)
		}
	}
	return nil
}
