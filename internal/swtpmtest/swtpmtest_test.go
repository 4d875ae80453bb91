package swtpmtest

import (
	"bytes"
	"os"
	"syscall"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// srkName creates the ECC storage root key (deterministic from the owner
// seed, which lives in the state directory), flushes it and returns its Name.
func srkName(t *testing.T, tpm transport.TPM) []byte {
	t.Helper()
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(tpm)
	if err != nil {
		t.Fatalf("CreatePrimary: %v", err)
	}
	if _, err := (tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}).Execute(tpm); err != nil {
		t.Fatalf("FlushContext: %v", err)
	}
	return rsp.Name.Buffer
}

func open(t *testing.T, s *TPM) transport.TPMCloser {
	t.Helper()
	tpm, err := s.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Close() })
	return tpm
}

func TestStartRestartStop(t *testing.T) {
	s := Start(t)
	tpm := open(t, s)

	rnd, err := tpm2.GetRandom{BytesRequested: 8}.Execute(tpm)
	if err != nil {
		t.Fatalf("GetRandom: %v", err)
	}
	if got := len(rnd.RandomBytes.Buffer); got != 8 {
		t.Fatalf("GetRandom returned %d bytes, want 8", got)
	}
	before := srkName(t, tpm)

	if err := s.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	// The same link keeps working: linuxudstpm dials once per command.
	if after := srkName(t, tpm); !bytes.Equal(before, after) {
		t.Errorf("SRK name after restart = %x, want %x (state not kept)", after, before)
	}

	other := Start(t)
	if o := srkName(t, open(t, other)); bytes.Equal(before, o) {
		t.Errorf("two swtpms have the same SRK %x; want separate state", o)
	}

	pid := s.Pid()
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("swtpm pid %d still alive after Stop", pid)
	}
	if _, err := (tpm2.GetRandom{BytesRequested: 8}).Execute(tpm); err == nil {
		t.Errorf("GetRandom after Stop succeeded; want an error")
	}
	if err := s.Restart(); err == nil {
		t.Errorf("Restart after Stop succeeded; want an error")
	}
	if _, err := os.Stat(s.StateDir()); err != nil {
		t.Errorf("state dir: %v", err)
	}
}
