package testutil

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// ProcStatus returns the resident memory (VmRSS) and its peak (VmHWM) of
// process pid, in bytes.
func ProcStatus(t testing.TB, pid int) (rss, hwm int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = n << 10
		case "VmHWM:":
			hwm = n << 10
		}
	}
	return rss, hwm
}
