package transport_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/pscs/pscs/transport"
)

// goCodes returns the constants of type Code that codes.go declares, by
// number: their Go names.
func goCodes(t *testing.T) map[uint32]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "codes.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint32]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Code" {
				t.Fatalf("codes.go: constant %s is not declared with type Code and a number", vs.Names[0])
			}
			if len(vs.Names) != 1 || len(vs.Values) != 1 {
				t.Fatalf("codes.go: one code per line, please (%v)", vs.Names)
			}
			lit, ok := vs.Values[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.INT {
				t.Fatalf("codes.go: %s is not a number literal", vs.Names[0])
			}
			n, err := strconv.ParseUint(lit.Value, 0, 32)
			if err != nil {
				t.Fatal(err)
			}
			if prev, dup := out[uint32(n)]; dup {
				t.Errorf("codes.go: %s and %s are both %d", prev, vs.Names[0], n)
			}
			out[uint32(n)] = vs.Names[0].Name
		}
	}
	return out
}

// docCode is a row of the code table in docs/protocol.md §7.
type docCode struct{ name, goName string }

// docCodes returns the rows of the code table in docs/protocol.md §7 by
// number.
func docCodes(t *testing.T) map[uint32]docCode {
	t.Helper()
	b, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n## 7. Codes\n")
	if !ok {
		t.Fatal("docs/protocol.md has no section 7. Codes")
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	row := regexp.MustCompile("(?m)^\\| *([0-9]+) *\\| *([^|]*?) *\\| *`?([^|`]*?)`? *\\|")
	out := map[uint32]docCode{}
	for _, m := range row.FindAllStringSubmatch(sec, -1) {
		n, err := strconv.ParseUint(m[1], 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := out[uint32(n)]; dup {
			t.Errorf("docs/protocol.md §7 lists code %d twice", n)
		}
		out[uint32(n)] = docCode{m[2], m[3]}
	}
	if len(out) == 0 {
		t.Fatal("docs/protocol.md §7 has no table rows")
	}
	return out
}

// TestCodesTableComplete: the code table of docs/protocol.md §7 lists
// exactly the codes transport declares, by number, each under the name
// Code.String gives it (the name error messages print, "pscs: busy
// (18)") and its Go constant, and every declared code has such a name.
func TestCodesTableComplete(t *testing.T) {
	inGo, inDoc := goCodes(t), docCodes(t)
	for n, name := range inGo {
		s := transport.Code(n).String()
		if s == "code "+strconv.Itoa(int(n)) {
			t.Errorf("%s (%d) has no name in codeNames", name, n)
		}
		row, ok := inDoc[n]
		if !ok {
			t.Errorf("%s (%d) is not in docs/protocol.md §7", name, n)
			continue
		}
		if row.name != s {
			t.Errorf("code %d (%s): docs/protocol.md §7 names it %q, Code.String %q", n, name, row.name, s)
		}
		if row.goName != name {
			t.Errorf("code %d: docs/protocol.md §7 says its constant is %q, codes.go declares %s", n, row.goName, name)
		}
	}
	for n, row := range inDoc {
		if _, ok := inGo[n]; !ok {
			t.Errorf("docs/protocol.md §7 lists code %d (%s), which transport does not declare", n, row.name)
		}
	}
}
