package e2e

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pscs/pscs/internal/rig"
)

// Return values (PKCS #11 v2.40 section 3.6).
const (
	ckrOK                    = 0x000
	ckrSlotIDInvalid         = 0x003
	ckrArgumentsBad          = 0x007
	ckrFunctionNotParallel   = 0x051
	ckrFunctionNotSupported  = 0x054
	ckrObjectHandleInvalid   = 0x082
	ckrOperationNotInit      = 0x091
	ckrSessionHandleInvalid  = 0x0B3
	ckrTokenNotPresent       = 0x0E0
	ckrUserNotLoggedIn       = 0x101
	ckrCryptokiNotInitalized = 0x190
)

// What an entry takes, which decides the checks it makes before it looks
// at its pointers (section 5.1.7: the codes of 5.1.1 before those of 5.1.2
// (session handle) before those of 5.1.3 (token) before those of 5.1.6,
// where CKR_ARGUMENTS_BAD, CKR_SLOT_ID_INVALID and
// CKR_FUNCTION_NOT_SUPPORTED are). CKR_CRYPTOKI_NOT_INITIALIZED comes
// first: before C_Initialize no handle names anything.
type takes int

const (
	library takes = iota // no session, no slot
	slotID               // a slot, not its token (C_GetSlotInfo; C_CloseAllSessions, which needs none)
	token                // a slot's token (section 5.1.3)
	session              // a session handle (section 5.1.2)
)

// checkOrder is every entry of the function list but C_Initialize and
// C_GetFunctionList: what it takes, and its answer with NULL for every
// pointer in a fresh R/W session with a present token.
var checkOrder = map[string]struct {
	takes takes
	null  int
}{
	"C_Finalize":         {library, ckrArgumentsBad}, // pReserved not NULL (5.4.2)
	"C_GetInfo":          {library, ckrArgumentsBad},
	"C_GetSlotList":      {library, ckrArgumentsBad},
	"C_GetSlotInfo":      {slotID, ckrArgumentsBad},
	"C_GetTokenInfo":     {token, ckrArgumentsBad},
	"C_GetMechanismList": {token, ckrArgumentsBad},
	"C_GetMechanismInfo": {token, ckrArgumentsBad},
	// Not supported: "Even unsupported functions in the Cryptoki API
	// should have a "stub" in the library" (5.1.6), after the checks.
	"C_InitToken":           {token, ckrFunctionNotSupported},
	"C_InitPIN":             {session, ckrFunctionNotSupported},
	"C_SetPIN":              {session, ckrFunctionNotSupported},
	"C_OpenSession":         {token, ckrArgumentsBad},
	"C_CloseSession":        {session, ckrOK},
	"C_CloseAllSessions":    {slotID, ckrOK},
	"C_GetSessionInfo":      {session, ckrArgumentsBad},
	"C_GetOperationState":   {session, ckrFunctionNotSupported},
	"C_SetOperationState":   {session, ckrFunctionNotSupported},
	"C_Login":               {session, ckrArgumentsBad},    // pPin NULL, ulPinLen 4
	"C_Logout":              {session, ckrUserNotLoggedIn}, // no pointer
	"C_CreateObject":        {session, ckrFunctionNotSupported},
	"C_CopyObject":          {session, ckrFunctionNotSupported},
	"C_DestroyObject":       {session, ckrObjectHandleInvalid}, // only derived keys are destroyed; handle 1 is none
	"C_GetObjectSize":       {session, ckrArgumentsBad},
	"C_GetAttributeValue":   {session, ckrArgumentsBad}, // NULL template, ulCount 1
	"C_SetAttributeValue":   {session, ckrFunctionNotSupported},
	"C_FindObjectsInit":     {session, ckrArgumentsBad},
	"C_FindObjects":         {session, ckrArgumentsBad},
	"C_FindObjectsFinal":    {session, ckrOperationNotInit},
	"C_EncryptInit":         {session, ckrFunctionNotSupported},
	"C_Encrypt":             {session, ckrFunctionNotSupported},
	"C_EncryptUpdate":       {session, ckrFunctionNotSupported},
	"C_EncryptFinal":        {session, ckrFunctionNotSupported},
	"C_DecryptInit":         {session, ckrArgumentsBad},
	"C_Decrypt":             {session, ckrArgumentsBad},
	"C_DecryptUpdate":       {session, ckrFunctionNotSupported},
	"C_DecryptFinal":        {session, ckrFunctionNotSupported},
	"C_DigestInit":          {session, ckrArgumentsBad},
	"C_Digest":              {session, ckrArgumentsBad}, // a NULL pulDigestLen
	"C_DigestUpdate":        {session, ckrArgumentsBad},
	"C_DigestKey":           {session, ckrFunctionNotSupported},
	"C_DigestFinal":         {session, ckrArgumentsBad},
	"C_SignInit":            {session, ckrArgumentsBad},
	"C_Sign":                {session, ckrArgumentsBad},
	"C_SignUpdate":          {session, ckrArgumentsBad},
	"C_SignFinal":           {session, ckrArgumentsBad},
	"C_SignRecoverInit":     {session, ckrFunctionNotSupported},
	"C_SignRecover":         {session, ckrFunctionNotSupported},
	"C_VerifyInit":          {session, ckrFunctionNotSupported},
	"C_Verify":              {session, ckrFunctionNotSupported},
	"C_VerifyUpdate":        {session, ckrFunctionNotSupported},
	"C_VerifyFinal":         {session, ckrFunctionNotSupported},
	"C_VerifyRecoverInit":   {session, ckrFunctionNotSupported},
	"C_VerifyRecover":       {session, ckrFunctionNotSupported},
	"C_DigestEncryptUpdate": {session, ckrFunctionNotSupported},
	"C_DecryptDigestUpdate": {session, ckrFunctionNotSupported},
	"C_SignEncryptUpdate":   {session, ckrFunctionNotSupported},
	"C_DecryptVerifyUpdate": {session, ckrFunctionNotSupported},
	"C_GenerateKey":         {session, ckrFunctionNotSupported},
	"C_GenerateKeyPair":     {session, ckrFunctionNotSupported},
	"C_WrapKey":             {session, ckrFunctionNotSupported},
	"C_UnwrapKey":           {session, ckrFunctionNotSupported},
	"C_DeriveKey":           {session, ckrArgumentsBad},
	"C_SeedRandom":          {session, ckrArgumentsBad}, // then CKR_RANDOM_SEED_NOT_SUPPORTED (5.15.1)
	"C_GenerateRandom":      {session, ckrArgumentsBad},
	// "a legacy function which should simply return the value
	// CKR_FUNCTION_NOT_PARALLEL" (5.16), after the checks its return
	// values list (CKR_CRYPTOKI_NOT_INITIALIZED, CKR_SESSION_HANDLE_INVALID).
	"C_GetFunctionStatus": {session, ckrFunctionNotParallel},
	"C_CancelFunction":    {session, ckrFunctionNotParallel},
	"C_WaitForSlotEvent":  {library, ckrArgumentsBad},
}

// want is the answer of entry e in phase.
func want(phase string, name string) int {
	e := checkOrder[name]
	switch phase {
	case "uninit":
		// 5.1.6: CKR_CRYPTOKI_NOT_INITIALIZED "can be returned by any
		// function other than C_Initialize and C_GetFunctionList";
		// every entry answers it first, unsupported ones too.
		return ckrCryptokiNotInitalized
	case "badhandle": // session 0xdead, slot 0x77
		switch e.takes {
		case session:
			return ckrSessionHandleInvalid // 5.1.2, before 5.1.6
		case slotID, token:
			return ckrSlotIDInvalid // 5.1.6 like CKR_ARGUMENTS_BAD: checked first here
		}
	case "notoken": // slot 0 has no token; session 1 is not open
		switch e.takes {
		case session:
			return ckrSessionHandleInvalid
		case token:
			return ckrTokenNotPresent // 5.1.3, before 5.1.6
		}
	}
	return e.null
}

// envWithout is this process's environment without the variables named.
func envWithout(names ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, n := range names {
			drop = drop || k == n
		}
		if !drop {
			out = append(out, kv)
		}
	}
	return out
}

// TestCheckOrder calls every entry of the function list from C with NULL
// for every pointer: before C_Initialize, with a session handle and slot
// that name nothing, in a real R/W session with a token present (against
// a server in this process), and on a slot without a token (a module with
// no configuration). Each answer is the one PKCS #11 v2.40 gives precedence
// to (see checkOrder and want).
func TestCheckOrder(t *testing.T) {
	need(t, "gcc")
	so, _ := binaries(t)
	dir := t.TempDir()
	host := filepath.Join(dir, "checkorder")
	if out, err := exec.Command("gcc", "-Wall", "-I..", "-o", host, "testdata/checkorder.c", "-ldl").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	r := rig.New(t)
	conf := r.WriteConfig(t, dir, "")
	full := append(os.Environ(), "PSCS_CONFIG="+conf, "XDG_CACHE_HOME="+filepath.Join(dir, "cache"), "PSCS_TIMEOUT=10s")
	home := filepath.Join(dir, "home")
	os.Mkdir(home, 0o700)
	none := append(envWithout("PSCS_CONFIG", "XDG_CONFIG_HOME"), "HOME="+home, "XDG_CACHE_HOME="+filepath.Join(dir, "cache2"))
	seen := map[string]int{}
	for _, run := range []struct {
		mode   string
		env    []string
		phases []string
	}{
		{"full", full, []string{"uninit", "badhandle", "null"}},
		{"notoken", none, []string{"notoken"}},
	} {
		out, err := runErr(t, run.env, host, so, run.mode)
		if err != nil {
			t.Fatalf("checkorder %s: %v\n%s", run.mode, err, out)
		}
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 2 && f[0] == "entries" {
				if f[1] != "68" {
					t.Errorf("the function list has %s entries, want the 68 of v2.40", f[1])
				}
				continue
			}
			if len(f) != 3 {
				t.Errorf("checkorder %s: unexpected line %q", run.mode, sc.Text())
				continue
			}
			phase, name := f[0], f[1]
			got, err := strconv.ParseUint(strings.TrimPrefix(f[2], "0x"), 16, 64)
			if err != nil {
				t.Errorf("line %q: %v", sc.Text(), err)
				continue
			}
			if _, ok := checkOrder[name]; !ok {
				t.Errorf("%s: no expectation for %s", phase, name)
				continue
			}
			seen[phase+" "+name]++
			if w := want(phase, name); int(got) != w {
				t.Errorf("%s %s: 0x%x, want 0x%x", phase, name, got, w)
			}
		}
		for _, phase := range run.phases {
			for name := range checkOrder {
				if seen[phase+" "+name] != 1 {
					t.Errorf("%s %s: called %d times, want once", phase, name, seen[phase+" "+name])
				}
			}
		}
	}
}

// runSplit runs an application and returns its standard output and
// standard error apart.
func runSplit(t *testing.T, env []string, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// TestMissingConfiguration: with no configuration, pkcs11-tool -L shows one
// slot without a token whose description names PSCS_CONFIG and the default
// path (in the user's home, written ~), instead of "No slots."; with
// PSCS_CONFIG naming a missing file, it names that. Applications that want
// a token find none (-O), and standard error, not a terminal here, stays
// clean: nothing is added to the output of programs that load the module
// and parse their own.
func TestMissingConfiguration(t *testing.T) {
	need(t, "pkcs11-tool")
	so, _ := binaries(t)
	home := t.TempDir()
	env := append(envWithout("PSCS_CONFIG", "XDG_CONFIG_HOME", "PSCS_DEBUG"), "HOME="+home)
	out, errOut, err := runSplit(t, env, "pkcs11-tool", "--module", so, "-L")
	if err != nil {
		t.Fatalf("pkcs11-tool -L: %v\n%s%s", err, out, errOut)
	}
	want := "Slot 0 (0x0): pscs: no config: set PSCS_CONFIG or ~/.config/pscs/client.conf\n  (empty)\n"
	if !strings.Contains(out, want) {
		t.Errorf("pkcs11-tool -L without a configuration:\n%s\nwant %q", out, want)
	}
	if errOut != "" {
		t.Errorf("standard error (not a terminal) is not clean: %q", errOut)
	}
	if out, errOut, _ := runSplit(t, env, "pkcs11-tool", "--module", so, "-O"); !strings.Contains(out+errOut, "No slot with a token was found") {
		t.Errorf("pkcs11-tool -O without a configuration:\n%s%s", out, errOut)
	}

	// At a terminal (script(1) gives pkcs11-tool one), a person also reads
	// one line, once, that names both in full.
	need(t, "script")
	out, errOut, err = runSplit(t, env, "script", "-qec", "pkcs11-tool --module "+so+" -L", "/dev/null")
	if err != nil {
		t.Fatalf("script pkcs11-tool -L: %v\n%s%s", err, out, errOut)
	}
	line := "pscs-pkcs11: no configuration: set PSCS_CONFIG or create " + filepath.Join(home, ".config/pscs/client.conf")
	if n := strings.Count(out, line); n != 1 {
		t.Errorf("at a terminal, %d times %q in\n%s", n, line, out)
	}

	env = append(env, "PSCS_CONFIG="+filepath.Join(home, "nope.conf"))
	out, errOut, err = runSplit(t, env, "pkcs11-tool", "--module", so, "-L")
	if err != nil {
		t.Fatalf("pkcs11-tool -L: %v\n%s%s", err, out, errOut)
	}
	if want := "Slot 0 (0x0): pscs: no configuration: PSCS_CONFIG=~/nope.conf missing\n"; !strings.Contains(out, want) {
		t.Errorf("pkcs11-tool -L with PSCS_CONFIG naming no file:\n%s\nwant %q", out, want)
	}
}

// TestUnreachableListing: pkcs11-tool -L with PSCS_TIMEOUT=1s, no stored
// catalogue and a server address on loopback where a socket drops every
// packet: the module tries the server once (packets from one client socket
// reach the server: every connection attempt dials from a socket of its
// own; before, the call made a second attempt with a timeout of its own),
// and lists no slot. The time is logged, not asserted.
func TestUnreachableListing(t *testing.T) {
	need(t, "pkcs11-tool")
	so, _ := binaries(t)
	dir := t.TempDir()
	srv := dropping(t)
	r := rig.New(t)
	conf := r.WriteConfig(t, dir, srv.addr)
	env := append(envWithout("PSCS_DEBUG"), "PSCS_CONFIG="+conf, "XDG_CACHE_HOME="+filepath.Join(dir, "cache"),
		"PSCS_TIMEOUT=1s")
	start := time.Now()
	out, errOut, err := runSplit(t, env, "pkcs11-tool", "--module", so, "-L")
	took := time.Since(start)
	if err != nil && !strings.Contains(out+errOut, "No slots.") { // it exits 1 with no slots
		t.Fatalf("pkcs11-tool -L: %v\n%s%s", err, out, errOut)
	}
	if !strings.Contains(out+errOut, "No slots.") {
		t.Errorf("pkcs11-tool -L:\n%s%s", out, errOut)
	}
	if n := srv.clients(); n != 1 {
		t.Errorf("packets from %d client sockets, want 1 (one connection attempt)", n)
	}
	t.Logf("pkcs11-tool -L with an unreachable server and PSCS_TIMEOUT=1s: %v", took.Round(time.Millisecond))
}

// droppingServer is a UDP socket on loopback that drops every packet and
// counts the addresses they came from.
type droppingServer struct {
	addr string
	mu   sync.Mutex
	from map[string]bool
}

func (d *droppingServer) clients() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.from)
}

// dropping starts a droppingServer, closed when the test ends.
func dropping(t *testing.T) *droppingServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &droppingServer{addr: pc.LocalAddr().String(), from: map[string]bool{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			d.mu.Lock()
			d.from[from.String()] = true
			d.mu.Unlock()
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return d
}
