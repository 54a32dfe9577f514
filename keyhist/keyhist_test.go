package keyhist

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func key(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// TestUseRefusesReuse: a key is accepted once and refused after, whatever
// else differs; keys that differ anywhere, or only in how the bytes split
// between the encryption and authentication keys, are different keys.
func TestUseRefusesReuse(t *testing.T) {
	h, err := Open(filepath.Join(t.TempDir(), "k"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	steps := []struct {
		name      string
		enc, auth []byte
		want      error
	}{
		{"first use", key(1, 20), nil, nil},
		{"same key again", key(1, 20), nil, ErrReused},
		{"same cipher key, an auth key", key(1, 20), key(2, 32), nil},
		{"that pair again", key(1, 20), key(2, 32), ErrReused},
		{"one byte differs", append(key(1, 19), 9), nil, nil},
		{"bytes moved from enc to auth", key(1, 19), key(1, 1), nil},
		{"auth-only key", nil, key(3, 20), nil},
		{"auth-only again", nil, key(3, 20), ErrReused},
	}
	for _, s := range steps {
		if err := h.Use(s.enc, s.auth); !errors.Is(err, s.want) || (s.want == nil && err != nil) {
			t.Errorf("%s: Use = %v, want %v", s.name, err, s.want)
		}
	}
	if h.Len() != 5 {
		t.Errorf("Len %d, want 5", h.Len())
	}
}

// TestHistoryOutlivesTheDaemon: a reopened history still refuses the keys
// used before; the file is the owner's alone and holds no key bytes.
func TestHistoryOutlivesTheDaemon(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "vnic0.keys")
	h, err := Open(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	k := []byte("0123456789abcdef0123")
	if err := h.Use(k, nil); err != nil {
		t.Fatal(err)
	}
	h.Close()
	h, err = Open(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Use(k, nil); !errors.Is(err, ErrReused) {
		t.Errorf("after a restart Use = %v, want ErrReused", err)
	}
	if err := h.Use(key(7, 20), nil); err != nil {
		t.Errorf("a fresh key after a restart: %v", err)
	}
	for p, want := range map[string]os.FileMode{path: 0o600, dir: 0o700 | os.ModeDir} {
		if st, err := os.Stat(p); err != nil || st.Mode() != want {
			t.Errorf("%s: mode %v, want %v (%v)", p, st.Mode(), want, err)
		}
	}
	data, _ := os.ReadFile(path)
	if bytes.Contains(data, k[:8]) {
		t.Error("the history file holds key bytes")
	}
}

// TestLimit: beyond its limit a history forgets the oldest keys, in
// memory and on disk, and its file stays bounded.
func TestLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k")
	h, err := Open(path, 4)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := h.Use(key(byte(i), 16), nil); err != nil {
			t.Fatal(err)
		}
	}
	if h.Len() != 4 {
		t.Errorf("Len %d, want 4", h.Len())
	}
	if err := h.Use(key(0, 16), nil); err != nil {
		t.Errorf("the oldest key is still remembered: %v", err)
	}
	if err := h.Use(key(19, 16), nil); !errors.Is(err, ErrReused) {
		t.Errorf("a recent key is forgotten: %v", err)
	}
	h.Close()
	if st, _ := os.Stat(path); st.Size() > int64(headerLen+2*4*16) {
		t.Errorf("file of %d bytes for a limit of 4", st.Size())
	}
	h, err = Open(path, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Use(key(19, 16), nil); !errors.Is(err, ErrReused) {
		t.Errorf("after reopening, a recent key is forgotten: %v", err)
	}
}

// TestDamagedFile: a file that is not a history is refused with a reason
// (the daemon does not start rather than forget); a record cut short by a
// crash is dropped and the rest kept.
func TestDamagedFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("hello, world: not a history at all"), 0o600)
	if _, err := Open(bad, 0); err == nil {
		t.Error("a foreign file was taken as a history")
	}
	path := filepath.Join(dir, "cut")
	h, err := Open(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	h.Use(key(1, 16), nil)
	h.Close()
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte{1, 2, 3})
	f.Close()
	h, err = Open(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Use(key(1, 16), nil); !errors.Is(err, ErrReused) {
		t.Errorf("the whole record before the cut one was lost: %v", err)
	}
	if st, _ := os.Stat(path); (st.Size()-int64(headerLen))%16 != 0 {
		t.Errorf("the cut record is still in the file (size %d)", st.Size())
	}
}

// FuzzOpen reads arbitrary history files: no panic, and a file that opens
// gives a working history.
func FuzzOpen(f *testing.F) {
	good := append(append(append([]byte{}, magic[:]...), key(5, secretLen)...), key(6, 16)...)
	f.Add(good)
	f.Add(good[:headerLen+3])
	f.Add([]byte{})
	f.Add(magic[:])
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "k")
		os.WriteFile(path, data, 0o600)
		h, err := Open(path, 3)
		if err != nil {
			return
		}
		defer h.Close()
		if h.Len() > 3 {
			t.Fatalf("Len %d beyond the limit", h.Len())
		}
		if err := h.Use(key(0xAB, 20), nil); err != nil && !errors.Is(err, ErrReused) {
			t.Fatal(err)
		}
		if err := h.Use(key(0xAB, 20), nil); !errors.Is(err, ErrReused) {
			t.Fatalf("second use: %v", err)
		}
	})
}
