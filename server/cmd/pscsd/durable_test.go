package main

// The state that refusals depend on survives kill -9: pscsd, configured as
// a site runs it (cards in a private pcscd's readers, swtpm as its TPM), is
// killed with SIGKILL twenty times while eight delegates sign under a
// total or a per-hour limit, and started again on the same state each
// time.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pscs/pscs/cards/vpcd"
	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/pcscdtest"
	"github.com/pscs/pscs/internal/swtpm"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/transport"
)

// site is a configured pscsd on swtpm and the private pcscd, with an
// owner, alice, who owns "mayor" (slot 1) and "ceo" (slot 2), one
// simulated card each.
type site struct {
	t     *testing.T
	bin   string
	dir   string
	conf  string
	env   []string
	owner client.Config
	sims  []*pivsim.Card
	cmd   *exec.Cmd
	log   *logBuffer
}

const sitePassphrase = "correct horse battery"

func newSite(t *testing.T) *site {
	t.Helper()
	if daemon == nil {
		t.Skip("no private pcscd (" + pcscdtest.SkipEnv + "=1)")
	}
	s := &site{t: t, bin: buildPSCSD(t), dir: t.TempDir()}
	ctx, cancel := context.WithCancel(context.Background())
	var plugged sync.WaitGroup
	t.Cleanup(func() { cancel(); plugged.Wait() })
	// Readers 2 and 3: TestConfiguredServer uses 0 and 1.
	for i := range 2 {
		sim, err := pivsim.New(pivsim.Config{Seed: []byte(fmt.Sprint("durable", i)), Serial: uint32(7200 + i)})
		if err != nil {
			t.Fatal(err)
		}
		s.sims = append(s.sims, sim)
		plugged.Add(1)
		go func() { defer plugged.Done(); vpcd.Plug(ctx, daemon.CardAddr(2+i), sim) }()
	}
	tpm, err := swtpm.New(filepath.Join(s.dir, "tpm"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Stop() })
	s.conf = filepath.Join(s.dir, "pscsd.json")
	cfg := map[string]any{"state": "state", "listen": freeUDP(t), "metrics": "off", "tpm": "unix:" + tpm.SocketPath(),
		"server_names": []string{"127.0.0.1"},
		"cards": []map[string]any{{"name": "mayor", "slot": 1, "owner": "alice", "serials": []string{"7200"}},
			{"name": "ceo", "slot": 2, "owner": "alice", "serials": []string{"7201"}}}}
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(s.conf, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s.env = append(os.Environ(), daemon.Env())
	initCmd := exec.Command(s.bin, "init", "-config", s.conf, "-owner", "alice", "-out", filepath.Join(s.dir, "alice"))
	initCmd.Env = s.env
	if out, err := initCmd.CombinedOutput(); err != nil {
		t.Fatalf("pscsd init: %v\n%s", err, out)
	}
	if s.owner, err = client.LoadConfig(filepath.Join(s.dir, "alice", "client.conf")); err != nil {
		t.Fatal(err)
	}
	s.owner.Retries = -1
	t.Cleanup(func() {
		if s.cmd != nil {
			s.cmd.Process.Kill()
			s.cmd.Wait()
		}
	})
	return s
}

// start starts pscsd and waits until it serves both cards.
func (s *site) start() {
	t := s.t
	t.Helper()
	s.log = &logBuffer{}
	s.cmd = exec.Command(s.bin, "-config", s.conf)
	s.cmd.Env = s.env
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.waitFor(regexp.MustCompile(`card joined`), 2)
	s.waitFor(regexp.MustCompile(`pscsd serving`), 1)
}

// waitFor is logBuffer.waitFor that gives up at once if pscsd exits.
func (s *site) waitFor(re *regexp.Regexp, n int) {
	t := s.t
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); len(re.FindAllString(s.log.String(), -1)) < n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %d × %q after 60 s in:\n%s", n, re, s.log.String())
		}
	}
}

// kill kills pscsd with SIGKILL and reaps it.
func (s *site) kill() {
	s.cmd.Process.Signal(syscall.SIGKILL)
	s.cmd.Wait()
	s.cmd = nil
}

func (s *site) dial(cfg client.Config) *client.Client {
	t := s.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("dial: %v\npscsd said:\n%s", err, s.log.String())
	}
	return c
}

func (s *site) admin(c *client.Client, req *transport.AdminRequest, sec *transport.AdminSecret) (*transport.AdminResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var secret []byte
	if sec != nil {
		secret, _ = transport.Marshal(sec)
	}
	var resp transport.AdminResponse
	err := c.Do(ctx, transport.OpAdmin, req, secret, &resp)
	return &resp, err
}

// issue has the owner's CA certify a new identity and returns its
// client configuration.
func (s *site) issue(owner *client.Client, name string) client.Config {
	t := s.t
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(key.Public())
	resp, err := s.admin(owner, &transport.AdminRequest{Action: transport.AdminIssue, Name: name, PublicKey: pub}, nil)
	if err != nil {
		t.Fatalf("issue %s: %v", name, err)
	}
	cfg := s.owner
	cfg.Certificate = tls.Certificate{Certificate: [][]byte{resp.Certificate}, PrivateKey: key}
	return cfg
}

// delegate delegates card to name and returns the delegation and its vPIN.
func (s *site) delegate(owner *client.Client, name, card string, total, perHour uint32) (id, vpin string) {
	t := s.t
	t.Helper()
	resp, err := s.admin(owner, &transport.AdminRequest{Action: transport.AdminDelegate, Delegation: &transport.AdminDelegation{
		Delegate: name, Card: card, NotAfter: time.Now().Add(24 * time.Hour).UnixMilli(), Total: total, PerHour: perHour}},
		&transport.AdminSecret{Passphrase: []byte(sitePassphrase)})
	if err != nil {
		t.Fatalf("delegate %s to %s: %v", card, name, err)
	}
	return resp.ID, resp.VPIN
}

func codeIs(err error, code transport.Code) bool { return transport.CodeOf(err) == code }

// TestPolicyStateSurvivesKill9: twenty times, pscsd is started, serves
// eight delegates signing as fast as they can (four under a total limit,
// four under a per-hour limit), one wrong vPIN and one wrong owner
// passphrase a round until their lockouts, and a delegation on a card that
// refused its registered PIN; then it is killed with SIGKILL while the
// signatures are in flight. Across every restart: no limit, lockout or
// lock is forgotten, no acknowledged signature is missing from the log,
// and no restored use count is below what the delegates were told.
func TestPolicyStateSurvivesKill9(t *testing.T) {
	s := newSite(t)
	s.start()
	owner := s.dial(s.owner)
	for _, card := range []string{"mayor", "ceo"} {
		if _, err := s.admin(owner, &transport.AdminRequest{Action: transport.AdminRegisterPIN, Card: card},
			&transport.AdminSecret{PIN: []byte("123456"), Passphrase: []byte(sitePassphrase)}); err != nil {
			t.Fatalf("register-pin %s: %v", card, err)
		}
	}
	const limit = 40
	type delegate struct {
		name, id string
		vpin     []byte
		cfg      client.Config
		total    bool // a total limit; else per hour
	}
	var loaders []*delegate
	for i := range 8 {
		d := &delegate{name: fmt.Sprintf("load%d", i), total: i < 4}
		d.cfg = s.issue(owner, d.name)
		var vpin string
		if d.total {
			d.id, vpin = s.delegate(owner, d.name, "mayor", limit, 0)
		} else {
			d.id, vpin = s.delegate(owner, d.name, "mayor", 0, limit)
		}
		d.vpin = []byte(vpin)
		loaders = append(loaders, d)
	}
	guesserCfg := s.issue(owner, "guesser")
	guesserID, guesserVPIN := s.delegate(owner, "guesser", "mayor", 0, 0)
	lockedCfg := s.issue(owner, "locked")
	lockedID, lockedVPIN := s.delegate(owner, "locked", "ceo", 0, 0)

	// The owner changes ceo's PIN behind pscsd's back: the first signature
	// costs the card one try and locks every delegation on it.
	chg := append([]byte{0x00, 0x24, 0x00, 0x80, 0x10}, []byte("123456\xff\xff777777\xff\xff")...)
	if rsp, err := s.sims[1].Transmit(context.Background(), chg); err != nil || rsp[0] != 0x90 {
		t.Fatalf("changing the card's PIN: %X, %v", rsp, err)
	}
	{
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		c := s.dial(lockedCfg)
		if _, err := c.Login(ctx, 2, []byte(lockedVPIN)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Sign(ctx, &transport.SignRequest{Slot: 2, Key: 1, Mechanism: 0x1044, Data: []byte("x")}); !codeIs(err, transport.CodeLocked) {
			t.Fatalf("sign on a card that refuses its registered PIN: %v, want locked", err)
		}
		c.Close()
		cancel()
	}
	if got := s.sims[1].PINRetries(); got != 2 {
		t.Fatalf("ceo has %d PIN tries left, want 2", got)
	}
	owner.Close()
	s.kill()

	// What the delegates were told, over all rounds.
	acked := map[string]int{}     // delegation -> signatures received
	refused := map[string]bool{}  // delegation -> told "limit reached"
	received := map[string]bool{} // every signature received
	const rounds, answersPerRound = 20, 24
	for round := 1; round <= rounds; round++ {
		s.start()
		// A hang guard only: the round ends when its work is done.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		owner := s.dial(s.owner)

		// The restored counters: never below what was acknowledged.
		list, err := s.admin(owner, &transport.AdminRequest{Action: transport.AdminList}, nil)
		if err != nil {
			t.Fatalf("round %d: list: %v", round, err)
		}
		state := map[string]transport.AdminDelegation{}
		for _, d := range list.Delegations {
			state[d.ID] = d
		}
		for _, d := range loaders {
			used := int(state[d.id].Used)
			if used < acked[d.id] || refused[d.id] && used < limit {
				t.Errorf("round %d: %s restored with %d signatures used; %d were received, limit reached %v", round, d.name, used, acked[d.id], refused[d.id])
			}
		}
		if !state[lockedID].Locked {
			t.Errorf("round %d: the delegation on the card that refused its PIN is not locked after the restart", round)
		}
		if round > 5 && !state[guesserID].Locked {
			t.Errorf("round %d: the delegation locked after 5 wrong vPINs is not locked after the restart", round)
		}

		// Eight delegates log in and, once all of them are in, sign until
		// pscsd has answered enough of them, each stopping at its
		// delegation's limit, while a delegate guesses vPINs, another
		// tries the locked card and the owner mistypes a passphrase; then
		// pscsd is killed with signatures in flight. (Signing while others
		// still log in, the kill could catch a login; spinning on "limit
		// reached", delegates at their limit would make the answers the
		// kill waits for, with no signature in flight.)
		var mu sync.Mutex
		answers, signing := 0, len(loaders)
		enough := make(chan struct{}) // at answersPerRound answers, or when no delegate signs any more
		stopped := func() {           // with mu held
			if (answers >= answersPerRound || signing == 0) && !isClosed(enough) {
				close(enough)
			}
		}
		allIn := make(chan struct{})
		clients := make([]*client.Client, len(loaders))
		var wg, loggedIn sync.WaitGroup
		for i, d := range loaders {
			cfg := d.cfg
			cfg.Retries = -1 // no resend: count only what came back
			c := s.dial(cfg)
			clients[i] = c
			wg.Add(1)
			loggedIn.Add(1)
			go func() {
				defer wg.Done()
				_, err := c.Login(ctx, 1, d.vpin)
				loggedIn.Done()
				if err != nil {
					t.Errorf("round %d: %s login: %v", round, d.name, err)
					mu.Lock()
					signing--
					stopped()
					mu.Unlock()
					return
				}
				<-allIn
				for {
					resp, err := c.Sign(ctx, &transport.SignRequest{Slot: 1, Key: 10, Mechanism: 0x1045, Data: []byte("load")})
					mu.Lock()
					atLimit := false
					switch {
					case err == nil:
						acked[d.id]++
						received[string(resp.Signature)] = true
					case codeIs(err, transport.CodeLimitReached):
						refused[d.id] = true
						atLimit = true
						signing--
					default:
						mu.Unlock()
						return // pscsd is gone
					}
					answers++
					stopped()
					mu.Unlock()
					if atLimit {
						return
					}
				}
			}()
		}
		loggedIn.Wait()
		close(allIn)
		checked := make(chan struct{})
		go func() {
			defer close(checked)
			s.lockouts(ctx, round, owner, guesserCfg, []byte(guesserVPIN), lockedCfg, []byte(lockedVPIN))
		}()
		for _, ch := range []chan struct{}{enough, checked} {
			select {
			case <-ch:
			case <-ctx.Done():
				mu.Lock()
				n, left := answers, signing
				mu.Unlock()
				t.Fatalf("round %d: %d answers, %d delegates signing, lockouts checked: %v", round, n, left, isClosed(checked))
			}
		}
		owner.Close()
		s.kill()
		for _, c := range clients {
			c.Close()
		}
		wg.Wait()
		cancel()

		for _, d := range loaders {
			if acked[d.id] > limit {
				t.Errorf("round %d: %s received %d signatures, over its limit of %d", round, d.name, acked[d.id], limit)
			}
		}
		logged, n, err := signaturesInLog(t, filepath.Join(s.dir, "state", "audit.log"))
		if err != nil && !errors.Is(err, audit.ErrTorn) {
			t.Fatalf("round %d: audit log after SIGKILL: %d records, then %v", round, n, err)
		}
		missing := 0
		for sig := range received {
			if !logged[sig] {
				missing++
			}
		}
		if missing > 0 {
			t.Errorf("round %d: %d of %d signatures received are not in the audit log", round, missing, len(received))
		}
		if t.Failed() {
			t.Logf("pscsd said:\n%s", s.log.String())
			return
		}
	}
	total := 0
	for _, n := range acked {
		total += n
	}
	t.Logf("%d rounds, %d signatures received, all within their limits and in the log", rounds, total)
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// lockouts, in round (from 1), has guesser try one wrong vPIN (the fifth
// locks; after it the right one is refused), locked try the card that
// refused its PIN (refused without the card losing a try), and the owner
// give one wrong passphrase (after five, even the right one is refused).
func (s *site) lockouts(ctx context.Context, round int, owner *client.Client, guesser client.Config, guesserVPIN []byte, locked client.Config, lockedVPIN []byte) {
	t := s.t
	g := s.dial(guesser)
	switch _, err := g.Login(ctx, 1, []byte("00000000")); {
	case round < 5 && !codeIs(err, transport.CodeWrongPIN):
		t.Errorf("round %d: wrong vPIN %d: %v, want wrong PIN", round, round, err)
	case round == 5 && !codeIs(err, transport.CodeLocked):
		t.Errorf("round %d: wrong vPIN %d (after %d restarts): %v, want locked", round, round, round-1, err)
	}
	if round >= 5 {
		if _, err := g.Login(ctx, 1, guesserVPIN); !codeIs(err, transport.CodeLocked) {
			t.Errorf("round %d: the right vPIN after the lockout: %v, want locked", round, err)
		}
	}
	g.Close()

	l := s.dial(locked)
	if _, err := l.Login(ctx, 2, lockedVPIN); err == nil {
		if _, err := l.Sign(ctx, &transport.SignRequest{Slot: 2, Key: 1, Mechanism: 0x1044, Data: []byte("x")}); err == nil {
			t.Errorf("round %d: signed on the locked card", round)
		}
		t.Errorf("round %d: login on the locked card: allowed, want locked", round)
	} else if !codeIs(err, transport.CodeLocked) {
		t.Errorf("round %d: login on the locked card: %v, want locked", round, err)
	}
	l.Close()
	if got := s.sims[1].PINRetries(); got != 2 {
		t.Errorf("round %d: ceo has %d PIN tries left, want 2: delegates are burning the card's PIN", round, got)
	}

	delegation := &transport.AdminDelegation{Delegate: "guesser", Card: "mayor", NotAfter: time.Now().Add(time.Hour).UnixMilli()}
	_, err := s.admin(owner, &transport.AdminRequest{Action: transport.AdminDelegate, Delegation: delegation},
		&transport.AdminSecret{Passphrase: []byte("wrong passphrase")})
	switch {
	case round <= 5 && !codeIs(err, transport.CodeWrongPIN):
		t.Errorf("round %d: wrong passphrase %d: %v, want wrong PIN", round, round, err)
	case round > 5 && !codeIs(err, transport.CodeLocked):
		t.Errorf("round %d: a passphrase after 5 wrong ones: %v, want locked", round, err)
	}
	if round > 5 {
		if _, err := s.admin(owner, &transport.AdminRequest{Action: transport.AdminDelegate, Delegation: delegation},
			&transport.AdminSecret{Passphrase: []byte(sitePassphrase)}); !codeIs(err, transport.CodeLocked) {
			t.Errorf("round %d: the right passphrase after 5 wrong ones: %v, want locked", round, err)
		}
	}
}
