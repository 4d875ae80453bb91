package apdu

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// exchange is one scripted C-APDU and the card's reply.
type exchange struct {
	cmd, reply []byte
}

// fakeCard replays a script strictly in order. It fails the test on an
// unexpected command and, at cleanup, on exchanges left over.
type fakeCard struct {
	t      *testing.T
	script []exchange
	n      int
	err    error // returned instead of a reply when the script is at errAt
	errAt  int
}

func newFakeCard(t *testing.T, script ...exchange) *fakeCard {
	t.Helper()
	f := &fakeCard{t: t, script: script, errAt: -1}
	t.Cleanup(func() {
		if f.n != len(f.script) {
			t.Errorf("fake card: %d of %d exchanges used", f.n, len(f.script))
		}
	})
	return f
}

func (f *fakeCard) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	f.t.Helper()
	if f.n >= len(f.script) {
		f.t.Fatalf("fake card: unexpected command % X after the script ended", cmd)
	}
	ex := f.script[f.n]
	if !bytes.Equal(cmd, ex.cmd) {
		f.t.Fatalf("fake card: exchange %d: got command\n% X\nwant\n% X", f.n, cmd, ex.cmd)
	}
	f.n++
	if f.n-1 == f.errAt {
		return nil, f.err
	}
	return ex.reply, nil
}

func ex(t *testing.T, cmd, reply string) exchange {
	t.Helper()
	return exchange{h(t, cmd), h(t, reply)}
}

func TestConnDo(t *testing.T) {
	// RSA-2048 GENERAL AUTHENTICATE from cards.md §1.5: 266 data bytes.
	block := cat(h(t, "00 01"), fill(0xFF, 202), h(t, "00"), seq(nil, 51))
	gaData := cat(h(t, "7C 82 01 06 82 00 81 82 01 00"), block)
	sig := seq(nil, 256)
	sigResp := cat(h(t, "7C 82 01 04 82 82 01 00"), sig)

	tests := []struct {
		name     string
		conn     Conn
		cmd      Command
		script   func(t *testing.T) []exchange
		want     []byte
		wantErr  error // matched with errors.Is
		wantSW   StatusWord
		wantNoSW bool
	}{
		{
			name: "simple success",
			cmd:  Command{INS: 0xA4, P1: 0x04, Data: h(t, "A0 00 00 03 08"), Ne: 256},
			script: func(t *testing.T) []exchange {
				return []exchange{ex(t, "00 A4 04 00 05 A0 00 00 03 08 00", "61 11 4F 06 00 00 10 00 01 00 79 07 4F 05 A0 00 00 03 08 90 00")}
			},
			want: h(t, "61 11 4F 06 00 00 10 00 01 00 79 07 4F 05 A0 00 00 03 08"),
		},
		{
			name: "wrong PIN",
			cmd:  Command{INS: 0x20, P2: 0x80, Data: h(t, "31 32 33 34 35 36 FF FF")},
			script: func(t *testing.T) []exchange {
				return []exchange{ex(t, "00 20 00 80 08 31 32 33 34 35 36 FF FF", "63 C2")}
			},
			wantErr: ErrWrongPIN, wantSW: 0x63C2,
		},
		{
			name: "not found",
			cmd:  Command{INS: 0xCB, P1: 0x3F, P2: 0xFF, Data: h(t, "5C 03 5F C1 05")},
			script: func(t *testing.T) []exchange {
				return []exchange{ex(t, "00 CB 3F FF 05 5C 03 5F C1 05", "6A 82")}
			},
			wantErr: ErrNotFound, wantSW: SWFileNotFound,
		},
		{
			name: "warning keeps data",
			cmd:  Command{INS: 0xB0, Ne: 16},
			script: func(t *testing.T) []exchange {
				return []exchange{ex(t, "00 B0 00 00 10", "01 02 03 62 82")}
			},
			want: h(t, "01 02 03"), wantSW: SWEndOfFile,
		},
		{
			name: "RSA chained GENERAL AUTHENTICATE with GET RESPONSE",
			cmd:  Command{INS: 0x87, P1: 0x07, P2: 0x9C, Data: gaData, Ne: 256},
			script: func(t *testing.T) []exchange {
				return []exchange{
					{cat(h(t, "10 87 07 9C FF"), gaData[:255]), h(t, "90 00")},
					{cat(h(t, "00 87 07 9C 0B"), gaData[255:], h(t, "00")), cat(sigResp[:256], h(t, "61 04"))},
					{h(t, "00 C0 00 00 04"), cat(sigResp[256:], h(t, "90 00"))},
				}
			},
			want: sigResp,
		},
		{
			name: "chaining 3 blocks keeps CLA bits",
			cmd:  Command{CLA: 0x81, INS: 0xDB, P1: 0x3F, P2: 0xFF, Data: seq(nil, 600)},
			script: func(t *testing.T) []exchange {
				d := seq(nil, 600)
				return []exchange{
					{cat(h(t, "91 DB 3F FF FF"), d[:255]), h(t, "90 00")},
					{cat(h(t, "91 DB 3F FF FF"), d[255:510]), h(t, "AA 90 00")}, // stray data ignored
					{cat(h(t, "81 DB 3F FF 5A"), d[510:]), h(t, "90 00")},
				}
			},
			want: nil,
		},
		{
			name: "chained block refused",
			cmd:  Command{INS: 0xDB, Data: seq(nil, 300)},
			script: func(t *testing.T) []exchange {
				return []exchange{{cat(h(t, "10 DB 00 00 FF"), seq(nil, 255)), h(t, "68 84")}}
			},
			wantSW: SWChainingNotSupported,
		},
		{
			name: "chained block answered 61xx is an error",
			cmd:  Command{INS: 0xDB, Data: seq(nil, 300)},
			script: func(t *testing.T) []exchange {
				return []exchange{{cat(h(t, "10 DB 00 00 FF"), seq(nil, 255)), h(t, "61 10")}}
			},
			wantSW: 0x6110,
		},
		{
			name: "extended card: no chaining",
			conn: Conn{Extended: true},
			cmd:  Command{INS: 0xDB, Data: seq(nil, 300), Ne: 1000},
			script: func(t *testing.T) []exchange {
				return []exchange{{cat(h(t, "00 DB 00 00 00 01 2C"), seq(nil, 300), h(t, "03 E8")), h(t, "90 00")}}
			},
		},
		{
			name: "extended command on short card: sent as is",
			cmd:  Command{INS: 0xCB, P1: 0x3F, P2: 0xFF, Data: h(t, "5C 03 5F C1 05"), Ne: 65536, Extended: true},
			script: func(t *testing.T) []exchange {
				return []exchange{ex(t, "00 CB 3F FF 00 00 05 5C 03 5F C1 05 00 00", "01 90 00")}
			},
			want: h(t, "01"),
		},
		{
			name: "Ne above 256 capped on short card",
			cmd:  Command{INS: 0xCA, P2: 0x6E, Ne: 3070},
			script: func(t *testing.T) []exchange {
				return []exchange{
					{h(t, "00 CA 00 6E 00"), cat(fill(1, 256), h(t, "61 3B"))},
					{h(t, "00 C0 00 00 3B"), cat(fill(2, 59), h(t, "90 00"))},
				}
			},
			want: cat(fill(1, 256), fill(2, 59)),
		},
		{
			name: "GET RESPONSE 6100 means 256, channel bits kept",
			cmd:  Command{CLA: 0x0F, INS: 0xCB, P1: 0x3F, P2: 0xFF, Data: h(t, "5C 01 7E")},
			script: func(t *testing.T) []exchange {
				return []exchange{
					ex(t, "0F CB 3F FF 03 5C 01 7E", "61 00"),
					{h(t, "03 C0 00 00 00"), cat(fill(3, 256), h(t, "61 02"))},
					ex(t, "03 C0 00 00 02", "04 05 90 00"),
				}
			},
			want: cat(fill(3, 256), h(t, "04 05")),
		},
		{
			name: "GET RESPONSE on further interindustry channel",
			cmd:  Command{CLA: 0x6B, INS: 0xCA, Ne: 4},
			script: func(t *testing.T) []exchange {
				return []exchange{
					ex(t, "6B CA 00 00 04", "01 61 01"),
					ex(t, "4B C0 00 00 01", "02 90 00"),
				}
			},
			want: h(t, "01 02"),
		},
		{
			name: "6Cxx re-issues with exact Le",
			cmd:  Command{INS: 0xB0, Ne: 256},
			script: func(t *testing.T) []exchange {
				return []exchange{
					ex(t, "00 B0 00 00 00", "6C 03"),
					ex(t, "00 B0 00 00 03", "01 02 03 90 00"),
				}
			},
			want: h(t, "01 02 03"),
		},
		{
			name: "6C00 means 256",
			cmd:  Command{INS: 0xB0, Ne: 1},
			script: func(t *testing.T) []exchange {
				return []exchange{
					ex(t, "00 B0 00 00 01", "6C 00"),
					{h(t, "00 B0 00 00 00"), cat(fill(9, 256), h(t, "90 00"))},
				}
			},
			want: fill(9, 256),
		},
		{
			name: "6Cxx then 61xx",
			cmd:  Command{INS: 0xCA, P2: 0x7A},
			script: func(t *testing.T) []exchange {
				return []exchange{
					ex(t, "00 CA 00 7A", "6C 05"),
					ex(t, "00 CA 00 7A 05", "7A 05 61 03"),
					ex(t, "00 C0 00 00 03", "93 03 00 90 00"),
				}
			},
			want: h(t, "7A 05 93 03 00"),
		},
		{
			name: "second 6Cxx is an error",
			cmd:  Command{INS: 0xB0, Ne: 256},
			script: func(t *testing.T) []exchange {
				return []exchange{
					ex(t, "00 B0 00 00 00", "6C 03"),
					ex(t, "00 B0 00 00 03", "6C 02"),
				}
			},
			wantErr: ErrWrongLength, wantSW: 0x6C02,
		},
		{
			name: "6Cxx during GET RESPONSE re-issues GET RESPONSE",
			cmd:  Command{INS: 0xB0, Ne: 256},
			script: func(t *testing.T) []exchange {
				return []exchange{
					ex(t, "00 B0 00 00 00", "01 61 05"),
					ex(t, "00 C0 00 00 05", "6C 02"),
					ex(t, "00 C0 00 00 02", "02 03 90 00"),
				}
			},
			want: h(t, "01 02 03"),
		},
		{
			name: "short reply",
			cmd:  Command{INS: 0xB0},
			script: func(t *testing.T) []exchange {
				return []exchange{ex(t, "00 B0 00 00", "90")}
			},
			wantErr: ErrMalformed, wantNoSW: true,
		},
		{
			name: "empty reply during GET RESPONSE",
			cmd:  Command{INS: 0xB0},
			script: func(t *testing.T) []exchange {
				return []exchange{ex(t, "00 B0 00 00", "01 61 01"), ex(t, "00 C0 00 00 01", "")}
			},
			wantErr: ErrMalformed, wantNoSW: true,
		},
		{
			name: "GET RESPONSE rounds capped",
			conn: Conn{MaxGetResponse: 2},
			cmd:  Command{INS: 0xB0},
			script: func(t *testing.T) []exchange {
				return []exchange{
					ex(t, "00 B0 00 00", "01 61 01"),
					ex(t, "00 C0 00 00 01", "02 61 01"),
					ex(t, "00 C0 00 00 01", "03 61 01"),
				}
			},
			wantErr: ErrResponseTooLong, wantNoSW: true,
		},
		{
			name: "response bytes capped",
			conn: Conn{MaxResponse: 300},
			cmd:  Command{INS: 0xB0, Ne: 256},
			script: func(t *testing.T) []exchange {
				return []exchange{
					{h(t, "00 B0 00 00 00"), cat(fill(1, 256), h(t, "61 00"))},
					{h(t, "00 C0 00 00 00"), cat(fill(1, 256), h(t, "90 00"))},
				}
			},
			wantErr: ErrResponseTooLong, wantNoSW: true,
		},
		{
			name: "response exactly at cap",
			conn: Conn{MaxResponse: 4},
			cmd:  Command{INS: 0xB0, Ne: 4},
			script: func(t *testing.T) []exchange {
				return []exchange{ex(t, "00 B0 00 00 04", "01 02 61 02"), ex(t, "00 C0 00 00 02", "03 04 90 00")}
			},
			want: h(t, "01 02 03 04"),
		},
		{
			name: "single huge reply capped",
			cmd:  Command{INS: 0xB0, Ne: 256},
			script: func(t *testing.T) []exchange {
				return []exchange{{h(t, "00 B0 00 00 00"), cat(fill(1, 65537), h(t, "90 00"))}}
			},
			wantErr: ErrResponseTooLong, wantNoSW: true,
		},
		{
			name:    "unencodable command",
			cmd:     Command{Ne: -1},
			script:  func(t *testing.T) []exchange { return nil },
			wantErr: ErrMalformed, wantNoSW: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			card := newFakeCard(t, tt.script(t)...)
			conn := tt.conn
			conn.T = card
			got, err := conn.Do(context.Background(), tt.cmd)
			if !bytes.Equal(got, tt.want) {
				t.Errorf("data: got % X, want % X", got, tt.want)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want errors.Is %v", err, tt.wantErr)
			}
			var sw StatusWord
			switch {
			case tt.wantNoSW:
				if err == nil || errors.As(err, &sw) {
					t.Errorf("err = %v, want a non-status error", err)
				}
			case tt.wantSW != 0:
				if !errors.As(err, &sw) || sw != tt.wantSW {
					t.Errorf("err = %v, want status %04X", err, uint16(tt.wantSW))
				}
			case err != nil:
				t.Errorf("err = %v, want nil", err)
			}
		})
	}
}

func TestConnDoEndlessMoreData(t *testing.T) {
	rogue := &countingCard{reply: h(t, "01 61 01")}
	conn := Conn{T: rogue}
	got, err := conn.Do(context.Background(), Command{INS: 0xB0})
	if !errors.Is(err, ErrResponseTooLong) || !errors.Is(err, ErrMalformed) || got != nil {
		t.Errorf("Do = % X, %v; want nil, ErrResponseTooLong", got, err)
	}
	if want := 1 + DefaultMaxGetResponse; rogue.n != want {
		t.Errorf("transmits = %d, want %d", rogue.n, want)
	}

	// Each reply carries 256 bytes plus 6100: the byte cap ends it first.
	rogue = &countingCard{reply: cat(fill(0xAA, 256), h(t, "61 00"))}
	conn = Conn{T: rogue, MaxGetResponse: 1000}
	if _, err := conn.Do(context.Background(), Command{INS: 0xB0}); !errors.Is(err, ErrResponseTooLong) {
		t.Errorf("err = %v, want ErrResponseTooLong", err)
	}
	if want := DefaultMaxResponse/256 + 1; rogue.n != want {
		t.Errorf("transmits = %d, want %d", rogue.n, want)
	}
}

func TestConnDoEndlessWrongLe(t *testing.T) {
	rogue := &countingCard{reply: h(t, "6C 10")}
	_, err := (&Conn{T: rogue}).Do(context.Background(), Command{INS: 0xB0})
	var sw StatusWord
	if !errors.As(err, &sw) || sw != 0x6C10 || rogue.n != 2 {
		t.Errorf("err = %v after %d transmits, want 6C10 after 2", err, rogue.n)
	}
}

// countingCard gives the same reply forever.
type countingCard struct {
	reply []byte
	n     int
}

func (c *countingCard) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	c.n++
	return c.reply, nil
}

func TestConnDoTransportError(t *testing.T) {
	errGone := errors.New("reader gone")
	card := newFakeCard(t,
		ex(t, "00 B0 00 00", "01 61 01"),
		ex(t, "00 C0 00 00 01", ""),
	)
	card.err, card.errAt = errGone, 1
	_, err := (&Conn{T: card}).Do(context.Background(), Command{INS: 0xB0})
	if !errors.Is(err, errGone) {
		t.Errorf("err = %v, want wrapping %v", err, errGone)
	}
}

func TestConnDoContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	card := newFakeCard(t) // nothing may be sent
	_, err := (&Conn{T: card}).Do(ctx, Command{INS: 0xB0})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}

	// A context that expires mid-sequence does not abandon it.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	card = newFakeCard(t,
		ex(t, "00 B0 00 00", "01 61 01"),
		ex(t, "00 C0 00 00 01", "02 90 00"),
	)
	got, err := (&Conn{T: cancelAfterFirst{card, cancel}}).Do(ctx, Command{INS: 0xB0})
	if err != nil || !bytes.Equal(got, h(t, "01 02")) {
		t.Errorf("Do = % X, %v; want 01 02, nil", got, err)
	}
}

type cancelAfterFirst struct {
	T      Transmitter
	cancel context.CancelFunc
}

func (c cancelAfterFirst) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	defer c.cancel()
	return c.T.Transmit(ctx, cmd)
}

func TestConnDoNilTransmitter(t *testing.T) {
	if _, err := (&Conn{}).Do(context.Background(), Command{}); err == nil {
		t.Errorf("Do with nil T: err = nil")
	}
}

// ctxCard refuses a done context, as pcsc.Card and the simulators do, and
// cancels the caller's context after its first reply.
type ctxCard struct {
	cancel  context.CancelFunc
	replies [][]byte
	sent    int
}

func (c *ctxCard) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := c.replies[c.sent]
	c.sent++
	c.cancel()
	return r, nil
}

// TestDoFinishesSequenceAfterCancel: once a sequence has started, a
// cancelled context does not leave a GET RESPONSE or a chain half done.
func TestDoFinishesSequenceAfterCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	card := &ctxCard{cancel: cancel, replies: [][]byte{{0x01, 0x61, 0x01}, {0x02, 0x90, 0x00}}}
	got, err := (&Conn{T: card}).Do(ctx, Command{INS: 0xCB, Ne: 256})
	if err != nil || !bytes.Equal(got, []byte{1, 2}) {
		t.Fatalf("Do = %X, %v; want 0102 after GET RESPONSE", got, err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	card = &ctxCard{cancel: cancel, replies: [][]byte{{0x90, 0x00}, {0x90, 0x00}}}
	if _, err := (&Conn{T: card}).Do(ctx, Command{INS: 0x87, Data: make([]byte, 300)}); err != nil || card.sent != 2 {
		t.Fatalf("chained Do after cancel: %v, %d blocks sent; want both", err, card.sent)
	}
	// A context already done sends nothing.
	card = &ctxCard{cancel: func() {}, replies: [][]byte{{0x90, 0x00}}}
	if _, err := (&Conn{T: card}).Do(ctx, Command{INS: 0xCB}); err == nil || card.sent != 0 {
		t.Fatalf("Do with a done context: %v, %d sent", err, card.sent)
	}
}
