package eidsim_test

import (
	"context"
	"strings"
	"testing"

	"github.com/pscs/pscs/profiles/esteid/eidsim"
)

// BenchmarkNew is the cost of a card: two P-384 keys, a test CA and two
// certificates.
func BenchmarkNew(b *testing.B) {
	for b.Loop() {
		if _, err := eidsim.New(eidsim.Config{Seed: []byte("bench")}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkQualifiedSignature is one qualified signature in process, with
// no latency model: VERIFY PIN2, then PSO:CDS.
func BenchmarkQualifiedSignature(b *testing.B) {
	c := newCard(b, eidsim.Config{})
	want(b, c, selADF2, "9000")
	want(b, c, mseSign, "9000")
	verify, cds := hx(verifyCmd(eidsim.PIN2, "12345")), hx("00 2A 9E 9A 30 "+strings.Repeat("01", 48)+" 60")
	ctx := context.Background()
	for b.Loop() {
		c.Transmit(ctx, verify)
		if rsp, _ := c.Transmit(ctx, cds); len(rsp) != 98 {
			b.Fatalf("PSO:CDS answered %X", rsp)
		}
	}
}
