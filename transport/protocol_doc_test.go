package transport

import (
	"bytes"
	"encoding/hex"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestProtocolDocExamples decodes every example of docs/protocol.md into
// the type it names, strictly (unknown fields are errors), and checks that
// encoding it again gives the same bytes.
func TestProtocolDocExamples(t *testing.T) {
	doc, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]func() any{
		"Request":         func() any { return new(Request) },
		"Response":        func() any { return new(Response) },
		"Event":           func() any { return new(Event) },
		"SignedPayload":   func() any { return new(SignedPayload) },
		"HelloRequest":    func() any { return new(HelloRequest) },
		"HelloResponse":   func() any { return new(HelloResponse) },
		"LoginRequest":    func() any { return new(LoginRequest) },
		"LoginResponse":   func() any { return new(LoginResponse) },
		"SignRequest":     func() any { return new(SignRequest) },
		"SignResponse":    func() any { return new(SignResponse) },
		"DecryptRequest":  func() any { return new(DecryptRequest) },
		"DecryptResponse": func() any { return new(DecryptResponse) },
		"OAEPParams":      func() any { return new(OAEPParams) },
		"DeriveRequest":   func() any { return new(DeriveRequest) },
		"DeriveResponse":  func() any { return new(DeriveResponse) },
		"LogoutRequest":   func() any { return new(LogoutRequest) },

		"SignDocumentRequest":  func() any { return new(SignDocumentRequest) },
		"SignDocumentResponse": func() any { return new(SignDocumentResponse) },
	}
	re := regexp.MustCompile("(?s)```cbor-hex (\\w+)\n(.*?)```")
	matches := re.FindAllSubmatch(doc, -1)
	if len(matches) < 10 {
		t.Fatalf("found %d examples in docs/protocol.md, want at least 10", len(matches))
	}
	for i, m := range matches {
		name := string(m[1])
		mk, ok := types[name]
		if !ok {
			t.Errorf("example %d names unknown type %q", i, name)
			continue
		}
		raw, err := hex.DecodeString(strings.Join(strings.Fields(string(m[2])), ""))
		if err != nil {
			t.Errorf("example %d (%s): bad hex: %v", i, name, err)
			continue
		}
		v := mk()
		if err := unmarshalStrict(raw, v); err != nil {
			t.Errorf("example %d (%s) does not decode: %v", i, name, err)
			continue
		}
		again, err := Marshal(v)
		if err != nil || !bytes.Equal(again, raw) {
			t.Errorf("example %d (%s) re-encodes as %x", i, name, again)
		}
		// Bodies inside requests and responses decode too.
		switch x := v.(type) {
		case *Request:
			if x.Body != nil {
				if err := unmarshalStrict(x.Body, new(HelloRequest)); err != nil && x.Op == OpHello {
					t.Errorf("example %d: hello body: %v", i, err)
				}
			}
		case *Response:
			if x.Body != nil {
				if err := unmarshalStrict(x.Body, new(SignResponse)); err != nil {
					t.Errorf("example %d: response body: %v", i, err)
				}
			}
		case *SignedPayload:
			if err := unmarshalStrict(x.Body, new(SignRequest)); err != nil {
				t.Errorf("example %d: signed body: %v", i, err)
			}
		}
	}
	// Every code of codes.go is in the document's table, and every
	// operation.
	for code, name := range codeNames {
		if !regexp.MustCompile(`\n\| ` + regexp.QuoteMeta(strconv.FormatUint(uint64(code), 10)) + ` \|`).Match(doc) {
			t.Errorf("code %d (%s) is missing from the table in docs/protocol.md", code, name)
		}
	}
	for op, name := range opNames {
		if !strings.Contains(string(doc), "| "+strconv.FormatUint(uint64(op), 10)+" "+name+" |") {
			t.Errorf("operation %d (%s) is missing from docs/protocol.md", op, name)
		}
	}
}
