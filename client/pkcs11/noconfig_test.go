//go:build cgo

package main

import (
	"strings"
	"testing"
)

// TestMissingConfigText: the slot description fits CK_SLOT_INFO's 64
// bytes, names PSCS_CONFIG, and names the path whenever it fits (the home
// directory written ~); the log line always names both in full.
func TestMissingConfigText(t *testing.T) {
	for _, tc := range []struct {
		path, home string
		explicit   bool
		desc       string
	}{
		{"/home/ann/.config/pscs/client.conf", "/home/ann", false,
			"pscs: no config: set PSCS_CONFIG or ~/.config/pscs/client.conf"},
		{"/x/pscs/client.conf", "/home/ann", false,
			"pscs: no config: set PSCS_CONFIG or create /x/pscs/client.conf"},
		{"/home/a-rather-long-user-name/some/where/deep/config/pscs/client.conf", "/nowhere", false,
			"pscs: no configuration: set PSCS_CONFIG"},
		{"/home/ann/d.conf", "/home/ann", true, "pscs: no configuration: PSCS_CONFIG=~/d.conf missing"},
		{"/srv/a/very/long/path/that/does/not/fit/in/a/slot/description.conf", "", true,
			"pscs: no configuration: the file PSCS_CONFIG names is missing"},
	} {
		desc, line := missingConfig(tc.path, tc.explicit, tc.home)
		if desc != tc.desc {
			t.Errorf("%s: description %q, want %q", tc.path, desc, tc.desc)
		}
		if len(desc) > slotDescriptionSize {
			t.Errorf("%s: description of %d bytes", tc.path, len(desc))
		}
		if !strings.Contains(line, "PSCS_CONFIG") || !strings.Contains(line, tc.path) {
			t.Errorf("%s: log line %q does not name PSCS_CONFIG and the path", tc.path, line)
		}
	}
}
