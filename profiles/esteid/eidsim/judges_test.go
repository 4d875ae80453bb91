package eidsim_test

// These tests plug the simulator into a real pcscd through vpcd and let
// software nobody on this project wrote judge it: OpenSC's esteid2018
// driver (pkcs11-tool, pkcs15-tool, opensc-tool) and OpenSSL.

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/internal/pcscdtest"
	"github.com/pscs/pscs/profiles/esteid/eidsim"
	"github.com/pscs/pscs/profiles/simkit/simkittest"
)

var env *pcscdtest.PCSCD

func TestMain(m *testing.M) {
	pcscdtest.Main(m, pcscdtest.Options{Entries: 2}, func(p *pcscdtest.PCSCD) { env = p })
}

const openscModule = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"

// judge is a card plugged into one reader of the private pcscd, and the
// environment for the tools that look at it.
type judge struct {
	t      *testing.T
	card   *eidsim.Card
	reader int
	dir    string
	env    []string
}

func plug(t *testing.T, reader int) *judge {
	t.Helper()
	for _, tool := range []string{"pkcs11-tool", "pkcs15-tool", "opensc-tool", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (make deps installs it): %v", tool, err)
		}
	}
	card, err := eidsim.New(eidsim.Config{Seed: []byte(t.Name())})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "opensc.conf")
	// No file caching (every simulated card would share the cache); enough
	// virtual slots for every reader. PSCS_OPENSC_DEBUG=1 logs OpenSC's
	// exchanges (PINs included) to opensc.log in the test's directory.
	debug := ""
	if os.Getenv("PSCS_OPENSC_DEBUG") == "1" {
		debug = " debug = 9;\n debug_file = " + filepath.Join(dir, "opensc.log") + ";\n"
		t.Logf("OpenSC log: %s", filepath.Join(dir, "opensc.log"))
	}
	os.WriteFile(conf, []byte("app default {\n"+debug+" framework pkcs15 {\n  use_file_caching = no;\n }\n}\n"+
		"app opensc-pkcs11 {\n pkcs11 {\n  max_virtual_slots = 64;\n }\n}\n"), 0o644)
	j := &judge{t: t, card: card, reader: reader, dir: dir,
		env: append(os.Environ(), "OPENSC_CONF="+conf)}

	if debug != "" {
		t.Cleanup(func() { logAPDUs(t, filepath.Join(dir, "opensc.log")) })
	}
	simkittest.Plug(t, env, reader, card)
	return j
}

// run runs a tool and returns its combined output; a failure is fatal unless
// wantFail.
func (j *judge) run(wantFail bool, name string, args ...string) string {
	j.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = j.env
	cmd.Dir = j.dir
	out, err := cmd.CombinedOutput()
	j.t.Logf("$ %s %s\n%s", name, strings.Join(args, " "), out)
	if err != nil && !wantFail {
		j.t.Fatalf("%s: %v", name, err)
	}
	if err == nil && wantFail {
		j.t.Fatalf("%s succeeded, want failure", name)
	}
	return string(out)
}

func (j *judge) p11(wantFail bool, args ...string) string {
	return j.run(wantFail, "pkcs11-tool", append([]string{"--module", openscModule}, args...)...)
}

func (j *judge) p15(args ...string) string {
	return j.run(false, "pkcs15-tool", append([]string{"--reader", strconv.Itoa(j.reader)}, args...)...)
}

func (j *judge) path(name string) string { return filepath.Join(j.dir, name) }

// logAPDUs logs the APDUs in an OpenSC debug log.
func logAPDUs(t *testing.T, file string) {
	b, _ := os.ReadFile(file)
	var out []string
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if strings.Contains(l, "Outgoing APDU") || strings.Contains(l, "Incoming APDU") {
			for k := i + 1; k < len(lines) && k < i+8 && !strings.Contains(lines[k], "[") && !strings.Contains(lines[k], "sm.c"); k++ {
				out = append(out, strings.TrimSpace(lines[k]))
			}
			out = append(out, "--")
		}
	}
	t.Logf("APDUs:\n%s", strings.Join(out, "\n"))
}

// slot returns the pkcs11-tool slot ID of PIN p's token in the judge's
// reader: OpenSC makes one virtual slot per PIN, labelled "… (PIN1)" and
// "… (PIN2)".

// slot returns the pkcs11-tool slot ID of PIN p's token in the judge's
// reader: OpenSC makes one virtual slot per PIN, labelled "… (PIN1)" and
// "… (PIN2)".
func (j *judge) slot(p eidsim.PIN) string {
	j.t.Helper()
	suffix := "(PIN1)"
	if p == eidsim.PIN2 {
		suffix = "(PIN2)"
	}
	out := j.p11(false, "-L")
	id := ""
	for _, l := range strings.Split(out, "\n") {
		if m := regexp.MustCompile(`^Slot \d+ \((0x[0-9a-f]+)\): (.*)$`).FindStringSubmatch(l); m != nil {
			id = ""
			if strings.TrimSpace(m[2]) == env.Readers[j.reader] {
				id = m[1]
			}
		}
		if id != "" && strings.Contains(l, "token label") && strings.HasSuffix(strings.TrimSpace(l), suffix) {
			return id
		}
	}
	j.t.Fatalf("no %s token in reader %q", suffix, env.Readers[j.reader])
	return ""
}

// triesLeft parses pkcs15-tool --list-pins: the tries left of each PIN by
// label.
func triesLeft(out string) map[string]int {
	got := map[string]int{}
	label := ""
	for _, l := range strings.Split(out, "\n") {
		if m := regexp.MustCompile(`^PIN \[(\w+)\]`).FindStringSubmatch(l); m != nil {
			label = m[1]
		}
		if m := regexp.MustCompile(`Tries left\s*:\s*(\d+)`).FindStringSubmatch(l); m != nil && label != "" {
			got[label], _ = strconv.Atoi(m[1])
		}
	}
	return got
}

func TestOpenSCSeesTokenKeysAndCertificates(t *testing.T) {
	j := plug(t, 0)
	person := j.card.Person()
	cn := person.Surname + "," + person.GivenName + "," + person.PersonalCode
	out := j.p11(false, "-L")
	for _, want := range []string{cn + " (PIN1)", cn + " (PIN2)", "serial num         : " + person.DocumentNumber,
		"token manufacturer : IDEMIA", "pin min/max        : 4/12", "pin min/max        : 5/12"} {
		if !strings.Contains(out, want) {
			t.Errorf("pkcs11-tool -L lacks %q", want)
		}
	}
	if n := strings.Count(out, "PIN initialized"); n != 2 {
		t.Errorf("pkcs11-tool -L shows %d initialised PIN tokens, want 2", n)
	}

	keys := j.p15("--list-keys")
	for _, want := range []string{"Private EC Key [Isikutuvastus]", "Private EC Key [Allkirjastamine]", "FieldLength    : 384"} {
		if !strings.Contains(keys, want) {
			t.Errorf("pkcs15-tool --list-keys lacks %q", want)
		}
	}
	dump := j.p15("--dump")
	for _, want := range []string{"PIN [PIN1]", "PIN [PIN2]", "PIN [PUK]", "Reference      : 133 (0x85)",
		"X.509 Certificate [Isikutuvastus]", "X.509 Certificate [Allkirjastamine]", "Path           : 3f00adf2341f"} {
		if !strings.Contains(dump, want) {
			t.Errorf("pkcs15-tool --dump lacks %q", want)
		}
	}
	for id, key := range map[string]eidsim.Key{"01": eidsim.KeyAuthentication, "02": eidsim.KeySignature} {
		pemOut := j.p15("--read-certificate", id)
		block, _ := pem.Decode([]byte(pemOut))
		if block == nil {
			t.Fatalf("pkcs15-tool --read-certificate %s printed no PEM", id)
		}
		if !bytes.Equal(block.Bytes, j.card.Certificate(key).Raw) {
			t.Errorf("certificate %s read by OpenSC differs from the card's", id)
		}
	}
}

// certPEM reads the certificate id with pkcs11-tool and writes it as PEM.
func (j *judge) certPEM(p eidsim.PIN, id string) string {
	j.t.Helper()
	der := j.path("cert" + id + ".der")
	j.p11(false, "--slot", j.slot(p), "--read-object", "--type", "cert", "--id", id, "--output-file", der)
	out := j.path("cert" + id + ".pem")
	j.run(false, "openssl", "x509", "-inform", "DER", "-in", der, "-out", out)
	return out
}

func TestOpenSCSignsWithBothKeysVerifiedByOpenSSL(t *testing.T) {
	j := plug(t, 1)
	data := j.path("data.txt")
	os.WriteFile(data, []byte("A contract the owner signs with a qualified signature.\n"), 0o644)
	ca := j.path("ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: j.card.CACertificate().Raw}), 0o644)
	cases := []struct {
		name, id, pin, mech, dgst string
		slot                      eidsim.PIN
	}{
		{"auth-SHA384", "01", "1234", "ECDSA-SHA384", "-sha384", eidsim.PIN1},
		{"auth-SHA256", "01", "1234", "ECDSA-SHA256", "-sha256", eidsim.PIN1},
		// The signature key is CKA_ALWAYS_AUTHENTICATE: pkcs11-tool logs in
		// and then gives PIN2 again as the context-specific PIN.
		{"sign-SHA384", "02", "12345", "ECDSA-SHA384", "-sha384", eidsim.PIN2},
		{"sign-SHA256", "02", "12345", "ECDSA-SHA256", "-sha256", eidsim.PIN2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j.t = t
			sig := j.path("sig-" + c.name)
			j.p11(false, "--slot", j.slot(c.slot), "--login", "--pin", c.pin, "--sign", "--id", c.id,
				"-m", c.mech, "--signature-format", "openssl", "--input-file", data, "--output-file", sig)
			cert := j.certPEM(c.slot, c.id)
			pub := j.path("pub" + c.id + ".pem")
			j.run(false, "openssl", "x509", "-in", cert, "-pubkey", "-noout", "-out", pub)
			out := j.run(false, "openssl", "dgst", c.dgst, "-verify", pub, "-signature", sig, data)
			if !strings.Contains(out, "Verified OK") {
				t.Errorf("openssl did not verify the %s signature", c.name)
			}
			out = j.run(false, "openssl", "verify", "-CAfile", ca, cert)
			if !strings.Contains(out, ": OK") {
				t.Errorf("openssl does not chain certificate %s to the card's test CA", c.id)
			}
		})
	}
	// PIN1's value is too short for PIN2: OpenSC refuses it before the
	// card sees it, and PIN2 keeps its tries.
	j.t = t
	out := j.p11(true, "--slot", j.slot(eidsim.PIN2), "--login", "--pin", "1234", "--sign", "--id", "02",
		"-m", "ECDSA-SHA384", "--input-file", data, "--output-file", j.path("sig-wrong"))
	if !strings.Contains(out, "CKR_PIN_LEN_RANGE") {
		t.Errorf("signature key with PIN1's value: pkcs11-tool did not report CKR_PIN_LEN_RANGE")
	}
	if got := j.card.Retries(eidsim.PIN2); got != 3 {
		t.Errorf("PIN2 tries after a too-short PIN = %d, want 3", got)
	}
}

// tokenFlags parses pkcs11-tool -L: the token flags of the PIN1 and PIN2
// tokens in the judge's reader.
func (j *judge) tokenFlags() map[string]string {
	j.t.Helper()
	out := j.p11(false, "-L")
	flags := map[string]string{}
	mine, label := false, ""
	for _, l := range strings.Split(out, "\n") {
		if m := regexp.MustCompile(`^Slot \d+ \(0x[0-9a-f]+\): (.*)$`).FindStringSubmatch(l); m != nil {
			mine, label = strings.TrimSpace(m[1]) == env.Readers[j.reader], ""
		}
		if m := regexp.MustCompile(`token label\s*:.*\((PIN\d)\)\s*$`).FindStringSubmatch(l); m != nil && mine {
			label = m[1]
		}
		if m := regexp.MustCompile(`token flags\s*:\s*(.*)$`).FindStringSubmatch(l); m != nil && label != "" {
			flags[label] = m[1]
		}
	}
	return flags
}

// pinFlags is what PKCS #11 token flags say of a PIN with left of max tries.
func pinFlags(left, max int) []string {
	switch {
	case left == 0:
		return []string{"user PIN locked"}
	case left == 1:
		return []string{"final user PIN try"}
	case left < max:
		return []string{"user PIN count low"}
	}
	return nil
}

// rawTries asks the card for the tries left of PIN ref through
// opensc-tool, with the GET DATA OpenSC's driver sends (byte 13 of the
// answer), after selecting the PIN's DF.
func (j *judge) rawTries(ref eidsim.PIN) int {
	j.t.Helper()
	df := "00A4000C"
	if ref == eidsim.PIN2 {
		df = "00A4010C02ADF2"
	}
	out := j.run(false, "opensc-tool", "-r", strconv.Itoa(j.reader), "-s", "00A4000C", "-s", df,
		"-s", fmt.Sprintf("00CB3FFF0A4D087006BF81%02X02A08000", byte(ref)&0x0F))
	_, rsp, ok := strings.Cut(out, "BF 81 "+fmt.Sprintf("%02X", byte(ref)&0x0F)+" 02 A0 80 00")
	_, rsp, ok2 := strings.Cut(rsp, "Received (SW1=0x90, SW2=0x00):")
	if !ok || !ok2 {
		j.t.Fatalf("opensc-tool: no answer to GET DATA of PIN %02X", byte(ref))
	}
	// Each line: up to 16 hex bytes, then their ASCII.
	var hexed string
	for _, l := range strings.Split(strings.TrimSpace(rsp), "\n") {
		hexed += regexp.MustCompile(`^(?:[0-9A-F]{2} ){1,16}`).FindString(strings.TrimSpace(l) + " ")
	}
	b, err := hex.DecodeString(strings.ReplaceAll(hexed, " ", ""))
	if err != nil || len(b) < 32 {
		j.t.Fatalf("opensc-tool: GET DATA of PIN %02X answered %X (%v)", byte(ref), b, err)
	}
	return int(b[13])
}

// OpenSC 0.23's esteid2018 emulation refreshes only PIN1's counter when it
// binds (its loop over the PINs ends after the first), so pkcs15-tool
// --list-pins reports PIN2's and the PUK's as the emulation's default.
// The test reads PIN1 there, PIN1 and PIN2 from the PKCS #11 token flags
// (OpenSC asks the card for the counter of the slot's PIN), and every
// counter raw with the GET DATA the driver sends.
func TestOpenSCWrongPINCostsOnlyItsOwnCounter(t *testing.T) {
	j := plug(t, 2)
	check := func(when string, pin1, pin2, puk int) {
		t.Helper()
		for p, n := range map[eidsim.PIN]int{eidsim.PIN1: pin1, eidsim.PIN2: pin2, eidsim.PUK: puk} {
			if got := j.card.Retries(p); got != n {
				t.Errorf("%s: card's counter %02X = %d, want %d", when, byte(p), got, n)
			}
			if got := j.rawTries(p); got != n {
				t.Errorf("%s: GET DATA of PIN %02X through opensc-tool says %d tries, want %d", when, byte(p), got, n)
			}
		}
		if got := triesLeft(j.p15("--list-pins"))["PIN1"]; got != pin1 {
			t.Errorf("%s: pkcs15-tool --list-pins shows PIN1 with %d tries, want %d", when, got, pin1)
		}
		flags := j.tokenFlags()
		for label, left := range map[string]int{"PIN1": pin1, "PIN2": pin2} {
			want := pinFlags(left, 3)
			for _, f := range []string{"user PIN locked", "user PIN count low", "final user PIN try"} {
				if has := strings.Contains(flags[label], f); has != slices.Contains(want, f) {
					t.Errorf("%s: %s token flags %q: %q present = %v, want %v", when, label, flags[label], f, has, !has)
				}
			}
		}
	}
	login := func(p eidsim.PIN, pin string, wantErr string) {
		t.Helper()
		out := j.p11(wantErr != "", "--slot", j.slot(p), "--login", "--pin", pin, "-O")
		if wantErr != "" && !strings.Contains(out, wantErr) {
			t.Errorf("login with %s: pkcs11-tool did not report %s", pin, wantErr)
		}
	}
	check("new card", 3, 3, 3)
	login(eidsim.PIN1, "9999", "CKR_PIN_INCORRECT")
	check("one wrong PIN1", 2, 3, 3)
	login(eidsim.PIN2, "99999", "CKR_PIN_INCORRECT")
	login(eidsim.PIN2, "99999", "CKR_PIN_INCORRECT")
	check("two wrong PIN2", 2, 1, 3)
	login(eidsim.PIN1, "1234", "")
	check("right PIN1", 3, 1, 3)
	login(eidsim.PIN2, "99999", "CKR_PIN_INCORRECT")
	check("PIN2 blocked", 3, 0, 3)
	login(eidsim.PIN2, "12345", "CKR_PIN_LOCKED")
	// A wrong PUK costs a PUK try; the PUK then unblocks PIN2 with a new
	// value, and PIN1 changes with itself.
	j.run(true, "pkcs15-tool", "--reader", strconv.Itoa(j.reader), "--unblock-pin", "--auth-id", "02",
		"--puk", "87654321", "--new-pin", "54321")
	check("wrong PUK", 3, 0, 2)
	j.p15("--unblock-pin", "--auth-id", "02", "--puk", "12345678", "--new-pin", "54321")
	check("PIN2 unblocked", 3, 3, 3)
	j.p15("--change-pin", "--auth-id", "01", "--pin", "1234", "--new-pin", "4321")
	login(eidsim.PIN1, "4321", "")
	login(eidsim.PIN1, "1234", "CKR_PIN_INCORRECT")
	data := j.path("data")
	os.WriteFile(data, []byte("after the unblock"), 0o644)
	j.p11(false, "--slot", j.slot(eidsim.PIN2), "--login", "--pin", "54321", "--sign", "--id", "02",
		"-m", "ECDSA-SHA384", "--input-file", data, "--output-file", j.path("sig"))
	check("after new PINs", 2, 3, 3)
}

// The authentication key agrees a secret (ECDH, PSO: DECIPHER) through
// OpenSC; OpenSSL agrees the same one from the other side.
func TestOpenSCDerivesWithTheAuthenticationKey(t *testing.T) {
	j := plug(t, 3)
	peer := j.path("peer.pem")
	j.run(false, "openssl", "ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", peer)
	peerPub := j.path("peer-pub.der")
	j.run(false, "openssl", "ec", "-in", peer, "-pubout", "-outform", "DER", "-out", peerPub)
	cardSecret := j.path("secret-card")
	j.p11(false, "--slot", j.slot(eidsim.PIN1), "--login", "--pin", "1234", "--derive", "-m", "ECDH1-DERIVE",
		"--id", "01", "--input-file", peerPub, "--output-file", cardSecret)
	cert := j.certPEM(eidsim.PIN1, "01")
	cardPub := j.path("card-pub.pem")
	j.run(false, "openssl", "x509", "-in", cert, "-pubkey", "-noout", "-out", cardPub)
	sslSecret := j.path("secret-openssl")
	j.run(false, "openssl", "pkeyutl", "-derive", "-inkey", peer, "-peerkey", cardPub, "-out", sslSecret)
	a, _ := os.ReadFile(cardSecret)
	b, _ := os.ReadFile(sslSecret)
	if len(a) != 48 || !bytes.Equal(a, b) {
		t.Errorf("secret through OpenSC %X, through OpenSSL %X", a, b)
	}
}
