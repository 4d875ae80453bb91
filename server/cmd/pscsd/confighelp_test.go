package main

import (
	"reflect"
	"testing"
)

// TestConfigHelpComplete: pscsd config-help says what every field of
// Config means, and nothing about fields that are gone.
func TestConfigHelpComplete(t *testing.T) {
	seen := map[string]bool{}
	configFields("", reflect.TypeFor[Config](), func(path, typ string) {
		seen[path] = true
		if configHelp[path] == "" {
			t.Errorf("config-help: no text for %s (%s): add it to configHelp", path, typ)
		}
	})
	for path := range configHelp {
		if !seen[path] {
			t.Errorf("config-help: %s is no field of Config", path)
		}
	}
	if len(seen) < 30 {
		t.Errorf("config-help walked %d fields of Config", len(seen))
	}
}
