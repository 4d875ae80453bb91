//go:build cgo

package main

import (
	"fmt"
	"log/syslog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/term"

	"github.com/pscs/pscs/client"
)

// What a person sees when the module finds no configuration. A module with
// no slots leaves them with "No slots." (pkcs11-tool -L) or "no token"
// (ssh, GnuTLS) and no hint; this one offers one slot without a token whose
// description names PSCS_CONFIG and the default path, and says it once in
// the system log (syslog, LOG_USER, tag pscs-pkcs11) and, when standard
// error is a terminal, there too. Applications that look for tokens find
// none, exactly as with no slots; standard error that is not a terminal
// (a daemon, a pipe, a program that parses it) stays clean, so that a
// module registered for every user (p11-kit) is quiet in the programs of
// users who do not use it.

// slotDescriptionSize is the size of CK_SLOT_INFO's slotDescription.
const slotDescriptionSize = 64

// missingConfig describes a configuration not found at path, named by
// PSCS_CONFIG (explicit) or the default path: the slot's description (at
// most 64 bytes, with the home directory written ~ to fit) and the line
// for the log.
func missingConfig(path string, explicit bool, home string) (desc, line string) {
	short := path
	if home != "" {
		if rel, err := filepath.Rel(home, path); err == nil && !strings.HasPrefix(rel, "..") {
			short = "~/" + rel
		}
	}
	var candidates []string
	if explicit {
		line = fmt.Sprintf("pscs-pkcs11: no configuration: %s=%s does not exist (unset it to use the default, or create the file): no remote cards",
			client.ConfigEnv, path)
		candidates = []string{
			"pscs: no configuration: " + client.ConfigEnv + "=" + short + " missing",
			"pscs: " + client.ConfigEnv + " names no file: " + short,
			"pscs: no configuration: the file " + client.ConfigEnv + " names is missing",
		}
	} else {
		line = fmt.Sprintf("pscs-pkcs11: no configuration: set %s or create %s: no remote cards",
			client.ConfigEnv, path)
		candidates = []string{
			"pscs: no configuration: set " + client.ConfigEnv + " or create " + short,
			"pscs: no config: set " + client.ConfigEnv + " or create " + short,
			"pscs: no config: set " + client.ConfigEnv + " or " + short,
			"pscs: no configuration: set " + client.ConfigEnv,
		}
	}
	for _, c := range candidates {
		if len(c) <= slotDescriptionSize {
			return c, line
		}
	}
	return candidates[len(candidates)-1], line
}

var sayOnce sync.Once

// say tells a person, once per process, what line says.
func say(line string) {
	sayOnce.Do(func() {
		if w, err := syslog.New(syslog.LOG_USER|syslog.LOG_NOTICE, "pscs-pkcs11"); err == nil {
			w.Notice(line)
			w.Close()
		}
		if term.IsTerminal(int(os.Stderr.Fd())) {
			fmt.Fprintln(os.Stderr, line)
		}
	})
}
