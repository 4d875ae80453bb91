package pcscdtest

import (
	"bytes"
	"context"
	"testing"
)

// TestPlug: Plug returns once opensc-tool sees the card in the reader, pull
// once it sees the reader empty; a second card in the same reader is seen
// by its own ATR.
func TestPlug(t *testing.T) {
	needPCSCD(t)
	p := start(t, Options{})
	card := &probeCard{seen: make(chan struct{}, 1)}
	pull := p.Plug(t, 1, card, PlugOptions{})
	atr, err := p.OpenSC(context.Background(), 1)
	if err != nil || !bytes.Equal(atr, card.ATR()) {
		t.Fatalf("after Plug, opensc-tool sees %X, %v; want %X", atr, err, card.ATR())
	}
	if atr, _ := p.OpenSC(context.Background(), 0); atr != nil {
		t.Errorf("reader 0 shows a card %X", atr)
	}
	pull()
	if atr, err := p.OpenSC(context.Background(), 1); atr != nil || err != nil {
		t.Fatalf("after pull, opensc-tool sees %X, %v", atr, err)
	}
	other := &atrCard{atr: []byte{0x3B, 0x81, 0x80, 0x01, 0x80, 0x80}}
	p.Plug(t, 1, other, PlugOptions{Once: true})
	if atr, _ := p.OpenSC(context.Background(), 1); !bytes.Equal(atr, other.atr) {
		t.Fatalf("second card: opensc-tool sees %X, want %X", atr, other.atr)
	}
}

// TestPlugNil: without a pcscd (Main under PSCS_SKIP_PCSCD=1), Plug skips.
func TestPlugNil(t *testing.T) {
	var p *PCSCD
	var sub *testing.T
	t.Run("skip", func(t *testing.T) {
		sub = t
		p.Plug(t, 0, &probeCard{}, PlugOptions{})
		t.Error("Plug on a nil PCSCD returned")
	})
	if !sub.Skipped() {
		t.Error("Plug on a nil PCSCD did not skip the test")
	}
}

type atrCard struct{ atr []byte }

func (c *atrCard) ATR() []byte                                      { return c.atr }
func (c *atrCard) Transmit(context.Context, []byte) ([]byte, error) { return []byte{0x90, 0x00}, nil }
func (c *atrCard) Reset()                                           {}
