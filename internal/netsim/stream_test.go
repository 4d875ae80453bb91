package netsim

import (
	"bufio"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// TestStreamRelay: an echo server behind the relay; three request–answer
// exchanges are three turns, each costing twice the delay.
func TestStreamRelay(t *testing.T) {
	dir := t.TempDir()
	up := filepath.Join(dir, "up.sock")
	ln, err := net.Listen("unix", up)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					c.Write(append(sc.Bytes(), '\n'))
				}
			}()
		}
	}()
	const delay = 20 * time.Millisecond
	r, err := NewStreamRelay("unix", filepath.Join(dir, "relay.sock"), up, delay)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c, err := net.Dial("unix", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rd := bufio.NewReader(c)
	start := time.Now()
	for _, msg := range []string{"one", "two", "three"} {
		c.Write([]byte(msg + "\n"))
		got, err := rd.ReadString('\n')
		if err != nil || got != msg+"\n" {
			t.Fatalf("echo %q: %q %v", msg, got, err)
		}
	}
	if took := time.Since(start); took < 3*2*delay {
		t.Errorf("three exchanges took %v, less than three round trips of %v", took, 2*delay)
	}
	if n := r.Turns(); n != 3 {
		t.Errorf("turns %d, want 3", n)
	}
	r.Reset()
	if r.Turns() != 0 || r.Span() != 0 {
		t.Error("Reset left counts")
	}
}
