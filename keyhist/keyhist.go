// Package keyhist remembers, across daemon restarts, the keys a device has
// sent with, so that it never sends with the same key twice.
//
// An outbound SA's nonces (its IVs) come from its sequence numbers, which
// start again at 1 for every new SA: a key given to a second outbound SA
// would repeat nonces, and AES-GCM or ChaCha20-Poly1305 with a repeated
// nonce gives away the XOR of two plaintexts and the authentication key.
// A History holds keyed fingerprints (HMAC-SHA-256 under a random secret
// of its own, cut to 128 bits) of every key used, never the keys, in a file
// that outlives the daemon; sadb's Table asks it before it adds an
// outbound SA.
package keyhist

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// fingerprint is what the history keeps of one key.
type fingerprint [16]byte

// magic starts every history file, with the format's version.
var magic = [8]byte{'v', 'n', 'i', 'c', 'k', 'h', 0, 1}

const (
	secretLen = 32
	headerLen = len(magic) + secretLen
)

// DefaultLimit is how many keys a history remembers when Open is given no
// limit: the oldest are forgotten beyond it (16 bytes each on disk).
const DefaultLimit = 1 << 16

// History is the set of keys a device has sent with. Safe for concurrent
// use.
type History struct {
	mu     sync.Mutex
	path   string
	f      *os.File
	secret [secretLen]byte
	seen   map[fingerprint]struct{}
	order  []fingerprint // oldest first
	limit  int
}

// Open opens the history at path, creating it (mode 0600, its directory
// 0700) with a fresh secret if it does not exist. limit bounds how many
// keys it remembers (DefaultLimit when 0).
func Open(path string, limit int) (*History, error) {
	if limit <= 0 {
		limit = DefaultLimit
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("key history: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("key history: %w", err)
	}
	h := &History{path: path, f: f, seen: map[fingerprint]struct{}{}, limit: limit}
	if err := h.load(); err != nil {
		f.Close()
		return nil, fmt.Errorf("key history %s: %w", path, err)
	}
	return h, nil
}

// load reads the file, or writes the header of a new one.
func (h *History) load() error {
	data, err := io.ReadAll(h.f)
	if err != nil {
		return err
	}
	if len(data) == 0 {
		if _, err := rand.Read(h.secret[:]); err != nil {
			return err
		}
		return h.rewrite()
	}
	if len(data) < headerLen || !bytes.Equal(data[:len(magic)], magic[:]) {
		return errors.New("not a vnic key history (remove it only if no SA still uses a key it lists)")
	}
	copy(h.secret[:], data[len(magic):headerLen])
	recs := data[headerLen:]
	// A record cut short by a crash is dropped: its add never returned.
	for len(recs) >= len(fingerprint{}) {
		var fp fingerprint
		copy(fp[:], recs)
		recs = recs[len(fp):]
		h.note(fp)
	}
	if len(h.order) > h.limit || len(recs) != 0 {
		return h.rewrite()
	}
	return nil
}

// note adds fp to the in-memory set, forgetting the oldest beyond limit.
func (h *History) note(fp fingerprint) {
	if _, ok := h.seen[fp]; ok {
		return
	}
	h.seen[fp] = struct{}{}
	h.order = append(h.order, fp)
	if len(h.order) > h.limit {
		delete(h.seen, h.order[0])
		h.order = h.order[1:]
	}
}

// rewrite replaces the file with the header and the remembered
// fingerprints, atomically (a new file renamed over the old one).
func (h *History) rewrite() error {
	tmp, err := os.OpenFile(h.path+".new", os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	buf := make([]byte, 0, headerLen+len(h.order)*len(fingerprint{}))
	buf = append(append(buf, magic[:]...), h.secret[:]...)
	for _, fp := range h.order {
		buf = append(buf, fp[:]...)
	}
	if _, err := tmp.Write(buf); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := os.Rename(h.path+".new", h.path); err != nil {
		tmp.Close()
		return err
	}
	h.f.Close()
	h.f = tmp
	h.order = append([]fingerprint(nil), h.order...) // let the old array go
	return nil
}

// fingerprint returns the keyed fingerprint of the key material of one SA:
// its encryption and authentication keys (salt included), each with its
// length.
func (h *History) fingerprint(encKey, authKey []byte) fingerprint {
	m := hmac.New(sha256.New, h.secret[:])
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(encKey)))
	m.Write(n[:])
	m.Write(encKey)
	binary.BigEndian.PutUint32(n[:], uint32(len(authKey)))
	m.Write(n[:])
	m.Write(authKey)
	var fp fingerprint
	copy(fp[:], m.Sum(nil))
	return fp
}

// Use records that an outbound SA is about to send with these keys. It
// returns ErrReused if they were used before, and an error if the record
// cannot be written to disk (the caller must then not use the keys: after
// a restart the history would not know them).
func (h *History) Use(encKey, authKey []byte) error {
	fp := h.fingerprint(encKey, authKey)
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.seen[fp]; ok {
		return ErrReused
	}
	if _, err := h.f.Seek(0, io.SeekEnd); err != nil {
		return fmt.Errorf("key history: %w", err)
	}
	if _, err := h.f.Write(fp[:]); err != nil {
		return fmt.Errorf("key history: %w", err)
	}
	if err := h.f.Sync(); err != nil {
		return fmt.Errorf("key history: %w", err)
	}
	h.note(fp)
	if len(h.order) == h.limit {
		// Keep the file as short as the memory: it holds at most twice
		// the limit before it is rewritten.
		if st, err := h.f.Stat(); err == nil && st.Size() > int64(headerLen+2*h.limit*len(fp)) {
			return h.rewrite()
		}
	}
	return nil
}

// Len returns how many keys the history remembers.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.order)
}

// Close closes the file. The history stays on disk for the next daemon.
func (h *History) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.f.Close()
}

// ErrReused says a key was already used by an outbound SA of this device.
var ErrReused = errors.New("this key was already used to send by an outbound SA of this device (perhaps before a restart): " +
	"a second SA with it would start its sequence numbers, and so its nonces, again; add the SA with a fresh key")
