// Command pkcs11 is the pscs PKCS #11 module: built with
// -buildmode=c-shared into bin/pscs-pkcs11.so, it shows a delegate's
// remote cards on pscsd to ordinary PKCS #11 applications (OpenSC's
// pkcs11-tool, GnuTLS, OpenSSL's pkcs11 engine, OpenSSH, NSS, Go through
// miekg/pkcs11), one slot per remote card.
//
//	go build -buildmode=c-shared -o bin/pscs-pkcs11.so ./client/pkcs11
//	PSCS_CONFIG=delegate.conf pkcs11-tool --module bin/pscs-pkcs11.so -L
//
// # Configuration
//
// The delegate's configuration file (client.File) is named by PSCS_CONFIG,
// or else is pscs/client.conf in the user's configuration directory. With
// neither (or with PSCS_CONFIG naming no file), the module offers one slot
// without a token whose description names PSCS_CONFIG and the path, and
// says so once in the system log (and on standard error when it is a
// terminal): see noconfig.go.
//
// PSCS_TIMEOUT (a Go duration, default 20s) bounds each call's wait for
// the server, once: a server that does not answer makes a call fail with
// CKR_DEVICE_ERROR after that long, and C_GetSlotList with no stored
// catalogue lists no slot after it (or sooner: a QUIC handshake gives up
// after 5 s of silence). PSCS_DEBUG=1 logs to standard error. Session tickets and the last catalogue are kept
// in the user's cache directory (client.CacheDir, mode 0600), so a new
// process answers slot and object calls at once and logs in with 0-RTT.
//
// # Structure
//
// This package is the only cgo of the client: p11.h declares the PKCS #11
// v2.40 types, shim.c holds the function list (the entries the module does
// not support answer CKR_FUNCTION_NOT_SUPPORTED), module.go the exported
// functions, which convert their arguments and call the pure-Go
// client/pkcs11/internal/token. Every export recovers panics into
// CKR_GENERAL_ERROR and does no work before C_Initialize; the Go runtime
// keeps the library loaded (it is marked NODELETE), so it is never
// unloaded under a running goroutine.
//
// # Conformance
//
// Every entry checks in the order of PKCS #11 v2.40 section 5.1.7:
// CKR_CRYPTOKI_NOT_INITIALIZED first, then the session handle (5.1.2) or
// the slot and its token (5.1.3), and only then its pointers
// (CKR_ARGUMENTS_BAD); the unsupported entries too, before
// CKR_FUNCTION_NOT_SUPPORTED (conformance.go; e2e's TestCheckOrder calls
// all 68). C_GetObjectSize answers CK_UNAVAILABLE_INFORMATION, C_SeedRandom
// CKR_RANDOM_SEED_NOT_SUPPORTED, and C_Login with CKU_SO the codes of a
// token without a security officer in C_Login's order (see token's
// conformance.go). CK_TOKEN_INFO's CKF_USER_PIN_COUNT_LOW,
// CKF_USER_PIN_FINAL_TRY and CKF_USER_PIN_LOCKED follow the delegation's
// virtual PIN as the server last reported it (token's pinflags.go).
//
// # Threads and fork
//
// The module is safe for concurrent use whatever C_Initialize's locking
// arguments say. The Go runtime does not survive fork(), so in a child of
// the process that loaded the module every entry answers
// CKR_CRYPTOKI_NOT_INITIALIZED from C, without entering Go, and
// C_Initialize fails (CKR_GENERAL_ERROR): the child never uses or closes
// the parent's connection. A child that needs the module execs a program
// that loads it.
//
// # Logins
//
// A login survives a restart of pscsd or a lost connection: the module
// keeps the login's vPIN in locked memory and logs in again by itself
// when the server has forgotten the login. The first signature after
// C_Login with a key that wants the PIN every time (PIV 9C) needs no
// context-specific login, as with a PIV card under OpenSC. See the
// package doc of client/pkcs11/internal/token.
package main

/*
#include <stdlib.h>
#include "p11.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/client/pkcs11/internal/token"
)

func main() {}

// instance is the module of one process, between C_Initialize and
// C_Finalize.
type instance struct {
	m   *token.Module
	pid int
}

var (
	initMu  sync.Mutex // serialises C_Initialize and C_Finalize
	current atomic.Pointer[instance]
)

// module returns the initialised module of this process. (shim.c keeps
// a forked child from getting here; the pid check is a second guard.)
func module() (*token.Module, C.CK_RV) {
	in := current.Load()
	if in == nil || in.pid != syscall.Getpid() {
		return nil, ckrNotInitialized
	}
	return in.m, ckrOK
}

func initialize() C.CK_RV {
	initMu.Lock()
	defer initMu.Unlock()
	pid := syscall.Getpid()
	if in := current.Load(); in != nil && in.pid == pid {
		return ckrAlreadyInitiated
	}
	// An instance of another pid is the parent's, inherited through fork:
	// dropped without closing (its socket is the parent's).
	opts, err := options()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pscs-pkcs11: %v\n", err)
		return ckrGeneral
	}
	current.Store(&instance{m: token.New(opts), pid: pid})
	return ckrOK
}

func finalize() C.CK_RV {
	initMu.Lock()
	defer initMu.Unlock()
	m, r := module()
	if r != ckrOK {
		return r
	}
	current.Store(nil)
	return rv(m.Finalize())
}

// getenv reads the process's environment as it is now. The Go runtime of
// a shared library copies the environment the process started with, so
// variables an application set before loading the module (with setenv)
// are only seen through C.
func getenv(key string) string {
	k := C.CString(key)
	defer C.free(unsafe.Pointer(k))
	v := C.getenv(k)
	if v == nil {
		return ""
	}
	return C.GoString(v)
}

// userDir is the XDG base directory named by env, or home/fallback, as
// os.UserConfigDir and os.UserCacheDir find them on Unix.
func userDir(env, fallback string) (string, error) {
	if d := getenv(env); d != "" {
		return d, nil
	}
	home := getenv("HOME")
	if home == "" {
		return "", errors.New("neither $" + env + " nor $HOME is defined")
	}
	return filepath.Join(home, fallback), nil
}

// options reads the delegate's configuration and the environment.
func options() (token.Options, error) {
	var opts token.Options
	level := slog.LevelWarn + 100 // nothing
	if getenv("PSCS_DEBUG") != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	opts.Logger = log
	if s := getenv("PSCS_TIMEOUT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return opts, fmt.Errorf("PSCS_TIMEOUT=%q: want a duration such as 10s", s)
		}
		opts.Timeout = d
	}
	path := getenv(client.ConfigEnv)
	explicit := path != ""
	if !explicit {
		dir, err := userDir("XDG_CONFIG_HOME", ".config")
		if err != nil {
			// No configuration directory: the slot says so (noconfig.go).
			opts.Unconfigured = "pscs: no configuration: set " + client.ConfigEnv
			say("pscs-pkcs11: no configuration: set " + client.ConfigEnv + " (" + err.Error() + "): no remote cards")
			return opts, nil
		}
		path = filepath.Join(dir, "pscs", "client.conf")
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		// The configuration file itself is missing (not a file it names).
		desc, line := missingConfig(path, explicit, getenv("HOME"))
		opts.Unconfigured = desc
		log.Debug("pscs: no configuration", "path", path)
		say(line)
		return opts, nil
	}
	cfg, err := client.LoadConfig(path)
	if err != nil {
		return opts, err
	}
	cfg.Name, cfg.Logger = "pscs-pkcs11", log
	if dir, err := userDir("XDG_CACHE_HOME", ".cache"); err == nil {
		dir = filepath.Join(dir, "pscs")
		cfg.SessionCache = client.NewFileSessionCache(filepath.Join(dir, "tickets-"+client.CacheKey(cfg)))
		opts.Store = token.FileStore{Path: filepath.Join(dir, "catalogue-"+client.CacheKey(cfg))}
	}
	opts.Connect = func(ctx context.Context) (token.Backend, error) {
		return client.Dial(ctx, cfg)
	}
	return opts, nil
}
