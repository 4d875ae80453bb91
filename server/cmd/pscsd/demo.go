package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"maps"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/swtpm"
	"github.com/pscs/pscs/profiles/piv"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/server"
	"github.com/pscs/pscs/server/console"
	"github.com/pscs/pscs/server/rsc"
	"github.com/pscs/pscs/server/store"
	"github.com/pscs/pscs/transport"
)

const demoWarning = `
  *******************************************************************
  *  pscsd DEMO MODE: simulated cards, a simulated TPM (swtpm), a     *
  *  throw-away CA and a printed virtual PIN. NOT FOR PRODUCTION.     *
  *******************************************************************
`

// runDemo sets up and serves the demo: four simulated PIV cards in
// process (three sharing one key pair: a parallel remote card "mayor";
// one on its own: "ceo"), both owned by a demo owner; a swtpm as the TPM;
// pscsd's CA, which issues the server's, the owner's and the demo
// delegate's certificates. On a new DIR the demo owner then does what an
// owner does, through signed administration requests like any client:
// registers the card's PIN under a passphrase, and delegates "mayor" to
// the demo delegate for signatures and decryption (the mayor's 9D is
// RSA-2048; the CEO's card keeps an ECC P-256 9D for key agreement), which
// yields the virtual PIN. The delegate's
// configuration goes to DIR/demo (client.conf, written last), the owner's
// to DIR/demo/owner. All state lives in DIR: started again on the same DIR,
// the demo resumes at the same address, and the delegate's configuration
// and vPIN still work. It serves until ctx ends.
//
// A fifth simulated card, "clerk" (slot 3), belongs to a second owner,
// demo-clerk (DIR/demo/clerk), so that the console's per-owner scoping has
// someone to keep out. With consoleAddr not empty the owners' web console
// listens there (HTTPS, pscsd's server certificate). With bk, pscsd makes
// backups as a configured one does.
func runDemo(ctx context.Context, log *slog.Logger, stateDir, listen, admin, consoleAddr string, realLatency bool, limits transport.Limits, bk *BackupConfig) error {
	fmt.Fprint(os.Stderr, demoWarning)
	demoDir := filepath.Join(stateDir, "demo")
	if err := os.MkdirAll(filepath.Join(demoDir, "owner"), 0o700); err != nil {
		return err
	}
	_, statErr := os.Stat(filepath.Join(stateDir, "store"))
	fresh := statErr != nil
	if fresh {
		// A new demo: a new TPM, vault and log.
		for _, p := range []string{filepath.Join(stateDir, "tpm"), filepath.Join(stateDir, "vault"), filepath.Join(stateDir, "audit.log")} {
			os.RemoveAll(p)
		}
	}
	st, stopTPM, err := openDemoState(stateDir, log, nil)
	if err != nil {
		return err
	}
	defer stopTPM()
	defer st.close()

	// The cards.
	ch := &changes{}
	mayor := rsc.NewPool("mayor", rsc.Options{SameKeys: true, Logger: log, OnChange: ch.hook("mayor")})
	ceo := rsc.NewPool("ceo", rsc.Options{Logger: log, OnChange: ch.hook("ceo")})
	clerk := rsc.NewPool("clerk", rsc.Options{Logger: log, OnChange: ch.hook("clerk")})
	defer mayor.Close()
	defer ceo.Close()
	defer clerk.Close()
	for i := range 5 {
		seed, pool := "demo mayor", mayor
		switch i {
		case 3:
			seed, pool = "demo ceo", ceo
		case 4:
			seed, pool = "demo clerk", clerk
		}
		lat := pivsim.Latency{}
		if realLatency {
			lat = pivsim.RealLatency
		}
		// The mayor's cards hold an RSA key management key (9D), which
		// decrypts; the CEO's card keeps PIV's default ECC P-256 there,
		// which agrees keys (ECDH).
		slots := pivsim.DefaultSlots
		if pool == mayor {
			slots = maps.Clone(pivsim.DefaultSlots)
			slots[pivsim.SlotKeyManagement] = pivsim.SlotConfig{Algorithm: pivsim.RSA2048}
		}
		sim, err := pivsim.New(pivsim.Config{Seed: []byte(seed), Serial: uint32(4242000 + i), Latency: lat, Slots: slots})
		if err != nil {
			return err
		}
		w := cards.NewWorker(traced(cards.Direct(sim), log.With("card", i)), log.With("card", i))
		defer w.Close()
		m, err := rsc.NewMember(ctx, fmt.Sprint(sim.Serial()), w, piv.Profile{})
		if err != nil {
			return err
		}
		if err := pool.Add(m); err != nil {
			return err
		}
	}
	// Enrollment on the server's own machine, as pscsd init does (the
	// clerk also in a demo begun before it existed).
	for name, dir := range map[string]string{demoOwner: filepath.Join(demoDir, "owner"), demoDelegate: demoDir, demoClerk: filepath.Join(demoDir, "clerk")} {
		if _, err := st.store.Get(store.KindIdentity, name); err == nil && !fresh {
			continue
		}
		if err := enrollLocal(st, name, dir); err != nil {
			return err
		}
	}
	cert, err := st.ca.IssueServer([]string{"localhost", "127.0.0.1", "::1"})
	if err != nil {
		return err
	}
	// The same address on every start, so that the configurations stay valid.
	if addr, err := st.store.Get(store.KindConfig, "listen"); err == nil && listen == "127.0.0.1:0" {
		listen = string(addr)
	}
	var con *ConsoleConfig
	if consoleAddr != "" {
		con = &ConsoleConfig{Listen: consoleAddr}
	}
	var consoleURL string
	return serve(ctx, log, st, serveOptions{name: "pscsd demo", changes: ch, listen: listen, metrics: admin, pinTries: 3, certificate: cert, limits: limits,
		console: con, consoleReady: func(c *console.Console) { consoleURL = c.URL() }, backup: bk,
		cards: []server.Card{{Name: "mayor", Slot: 1, Owner: demoOwner, Pool: mayor}, {Name: "ceo", Slot: 2, Owner: demoOwner, Pool: ceo},
			{Name: "clerk", Slot: 3, Owner: demoClerk, Pool: clerk}},
		ready: func(udp, met net.Addr) error {
			if err := st.store.Put(store.KindConfig, "listen", []byte(udp.String())); err != nil {
				return err
			}
			// The clerk's configuration, now that the address is known.
			if err := writeClientConf(filepath.Join(demoDir, "clerk", "client.conf"), udp.String(), "127.0.0.1"); err != nil {
				return err
			}
			go func() {
				vpin, err := demoReady(ctx, demoDir, udp.String(), fresh)
				if err != nil {
					log.Error("demo setup failed", "err", err)
					return
				}
				conf := filepath.Join(demoDir, "client.conf")
				fmt.Fprintf(os.Stderr, `pscsd demo serving on %s (metrics and health: http://%s/metrics, /healthz)
  remote cards: 1 "mayor" (parallel: 3 cards, one key pair), 2 "ceo" (1 card), owned by %s;
                3 "clerk" (1 card), owned by %s (%s)
  delegation:   "mayor" to %s for 30 days
  virtual PIN:  %s  (also in %s)%s
next:
  PSCS_CONFIG=%s bin/pscs slots
  PSCS_CONFIG=%s PSCS_VPIN=%s bin/pscs sign -slot 1 -in FILE -out FILE.sig -cert signer.pem
  PSCS_CONFIG=%s bin/pscs admin list          (the owner)
`, udp, met, demoOwner, demoClerk, filepath.Join(demoDir, "clerk", "client.conf"), demoDelegate, vpin, filepath.Join(demoDir, "vpin"),
					consoleLine(consoleURL, filepath.Join(demoDir, "owner", "client.conf")), conf, conf, vpin,
					filepath.Join(demoDir, "owner", "client.conf"))
			}()
			return nil
		}})
}

// consoleLine is the demo banner's line about the console.
func consoleLine(url, ownerConf string) string {
	if url == "" {
		return ""
	}
	return fmt.Sprintf("\n  console:      %s  (the owner's one-time link: PSCS_CONFIG=%s bin/pscs admin console)", url, ownerConf)
}

const (
	demoClerk    = "demo-clerk"
	demoOwner    = "demo-owner"
	demoDelegate = "demo-delegate"
	demoPIN      = "123456" // the simulated cards' PIN
)

// demoReady, on a new demo, has the demo owner register the card's PIN and
// delegate "mayor" to the demo delegate through administration requests,
// and writes the virtual PIN and then the delegate's client.conf. On a
// restart it reads the virtual PIN back.
func demoReady(ctx context.Context, demoDir, addr string, fresh bool) (string, error) {
	if !fresh {
		b, err := os.ReadFile(filepath.Join(demoDir, "vpin"))
		return strings.TrimSpace(string(b)), err
	}
	ownerConf := filepath.Join(demoDir, "owner", "client.conf")
	if err := writeClientConf(ownerConf, addr, "127.0.0.1"); err != nil {
		return "", err
	}
	cfg, err := client.LoadConfig(ownerConf)
	if err != nil {
		return "", err
	}
	cfg.Retries = 3
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	passphrase := fmt.Sprintf("demo-%016d", mustRandInt(1e16))
	if err := os.WriteFile(filepath.Join(demoDir, "owner", "passphrase"), []byte(passphrase+"\n"), 0o600); err != nil {
		return "", err
	}
	secret, err := transport.Marshal(&transport.AdminSecret{PIN: []byte(demoPIN), Passphrase: []byte(passphrase)})
	if err != nil {
		return "", err
	}
	if err := c.Do(ctx, transport.OpAdmin, &transport.AdminRequest{Action: transport.AdminRegisterPIN, Card: "mayor"}, secret, nil); err != nil {
		return "", fmt.Errorf("registering the card's PIN: %w", err)
	}
	secret, _ = transport.Marshal(&transport.AdminSecret{Passphrase: []byte(passphrase)})
	var resp transport.AdminResponse
	err = c.Do(ctx, transport.OpAdmin, &transport.AdminRequest{Action: transport.AdminDelegate,
		Delegation: &transport.AdminDelegation{Delegate: demoDelegate, Card: "mayor", Ops: []string{"sign", "decrypt"},
			NotAfter: time.Now().Add(30 * 24 * time.Hour).UnixMilli(), PerHour: 1000}}, secret, &resp)
	if err != nil {
		return "", fmt.Errorf("delegating: %w", err)
	}
	if err := os.WriteFile(filepath.Join(demoDir, "vpin"), []byte(resp.VPIN+"\n"), 0o600); err != nil {
		return "", err
	}
	return resp.VPIN, writeClientConf(filepath.Join(demoDir, "client.conf"), addr, "127.0.0.1")
}

// writeClientConf writes the client.conf of an identity directory that
// enrollLocal filled, for the server at addr known by serverName.
func writeClientConf(path, addr, serverName string) error {
	b, _ := json.MarshalIndent(client.File{Server: addr, ServerName: serverName,
		CA: "ca.pem", Certificate: "identity.pem", Key: "identity.key"}, "", "  ")
	return os.WriteFile(path, append(b, '\n'), 0o600)
}

// enrollLocal enrolls name with a new key certified by pscsd's CA, on the
// server's own machine, and writes the identity's key, certificate and
// the CA certificate to dir (what its client.conf names).
func enrollLocal(st *state, name, dir string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	cert, err := st.ca.IssueClient(name, key.Public())
	if err != nil {
		return err
	}
	if err := st.store.Put(store.KindIdentity, name, cert.Raw); err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for file, b := range map[string][]byte{
		"ca.pem":       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: st.ca.Cert.Raw}),
		"identity.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		"identity.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	} {
		if err := os.WriteFile(filepath.Join(dir, file), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func mustRandInt(n int64) int64 {
	v, err := rand.Int(rand.Reader, big.NewInt(n))
	if err != nil {
		panic(err)
	}
	return v.Int64()
}

// openDemoState starts the demo's TPM (swtpm, its state kept in
// DIR/tpm) and opens the demo's state on it; stop stops the TPM.
func openDemoState(stateDir string, log *slog.Logger, rec *recovery) (st *state, stop func(), err error) {
	sw, err := swtpm.New(filepath.Join(stateDir, "tpm"))
	if err != nil {
		return nil, nil, fmt.Errorf("demo TPM (swtpm): %w", err)
	}
	tpm, err := sw.Open()
	if err == nil {
		st, err = openState(stateDir, tpm, log, TPMDAConfig{}.vaultDA(), rec)
	}
	if err != nil {
		sw.Stop()
		return nil, nil, err
	}
	return st, func() { sw.Stop() }, nil
}
