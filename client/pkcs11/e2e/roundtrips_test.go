package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/internal/netsim"
	"github.com/pscs/pscs/internal/rig"
)

// TestProcessRoundTrips counts, at the network simulator (the causal chain of
// datagrams, see netsim.Proxy.RoundTrips), the round trips
// of whole `pkcs11-tool --login --sign` processes against a server in this
// process whose card answers at once (so the link alone is measured, at
// 1 s RTT): the first ever (nothing cached), one with the catalogue
// cached but no session ticket, and one with both (its login rides in
// 0-RTT early data). p11-kit's remoting needs 17 for the same process
// (docs: peers).
//
// The module runs in pkcs11-tool, built without the race detector, so it
// sends 0-RTT data whether or not this test binary has the race detector.
// linkDelay is long beside what the ends take to answer, even on a loaded
// machine with the race detector: a datagram one end sends unprompted (an
// acknowledgement) while the other end is still working on its answer
// counts as a round trip if it arrives first (see netsim.Proxy.RoundTrips),
// and it arrives 2×linkDelay after the datagram it acknowledges.
const linkDelay = 500 * time.Millisecond

func TestProcessRoundTrips(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: about ten seconds of simulated latency")
	}
	need(t, "pkcs11-tool")
	so, _ := binaries(t)
	r := rig.New(t)
	p, err := netsim.New(r.Config.Addr, netsim.Config{Delay: linkDelay})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	dir := t.TempDir()
	conf := r.WriteConfig(t, dir, p.Addr())
	cache := filepath.Join(dir, "cache")
	env := append(os.Environ(), "PSCS_CONFIG="+conf, "XDG_CACHE_HOME="+cache)
	doc := filepath.Join(dir, "doc")
	os.WriteFile(doc, []byte("round trips"), 0o600)
	process := func() (int, time.Duration) {
		p.ResetCounters()
		start := time.Now()
		run(t, env, "pkcs11-tool", "--module", so, "--login", "--pin", rig.VPIN, "--sign", "-m", "ECDSA-SHA256",
			"--id", "01", "-i", doc, "-o", filepath.Join(dir, "sig"))
		return p.RoundTrips(), time.Since(start)
	}
	first, firstT := process()
	tickets, _ := filepath.Glob(filepath.Join(cache, "pscs", "tickets-*"))
	if len(tickets) != 1 {
		t.Fatalf("session tickets kept: %v, want one file", tickets)
	}
	if fi, err := os.Stat(tickets[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("ticket file %v: mode %v, want 0600", err, fi.Mode().Perm())
	}
	os.Remove(tickets[0])
	noTicket, noTicketT := process()
	withTicket, withTicketT := process()
	t.Logf("round trips of a whole pkcs11-tool --login --sign at 1 s RTT: first ever %d (%v), catalogue cached without ticket %d (%v), with ticket (0-RTT) %d (%v); p11-kit: 17",
		first, firstT.Round(time.Millisecond), noTicket, noTicketT.Round(time.Millisecond), withTicket, withTicketT.Round(time.Millisecond))
	if first > 4 {
		t.Errorf("first process: %d round trips, want at most 4 (handshake, catalogue, login, signature)", first)
	}
	if noTicket > 3 {
		t.Errorf("without a ticket: %d round trips, want at most 3", noTicket)
	}
	if withTicket > 2 {
		t.Errorf("with a ticket: %d round trips, want at most 2", withTicket)
	}
	if out := run(t, env, "pkcs11-tool", "--module", so, "-L"); !strings.Contains(out, "mayor") {
		t.Errorf("pkcs11-tool -L: %s", out)
	}
}
