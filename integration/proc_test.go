package integration

import (
	"bytes"
	"os/exec"
	"testing"
	"time"
)

// background is a command running while a test goes on.
type background struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan error
}

func startBackground(t *testing.T, name string, args ...string) *background {
	t.Helper()
	b := &background{cmd: exec.Command(name, args...), out: &bytes.Buffer{}, done: make(chan error, 1)}
	b.cmd.Stdout, b.cmd.Stderr = b.out, b.out
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { b.done <- b.cmd.Wait() }()
	t.Cleanup(func() { b.cmd.Process.Kill() }) // harmless once it has exited
	return b
}

// wait waits for the command to end, killing it after d.
func (b *background) wait(t *testing.T, d time.Duration) error {
	select {
	case err := <-b.done:
		return err
	case <-time.After(d):
		b.cmd.Process.Kill()
		return <-b.done
	}
}
