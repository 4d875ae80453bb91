// Package apdu encodes and decodes ISO/IEC 7816-3/-4 application protocol
// data units, turns status words into errors, reads and writes the BER-TLV
// data objects that smart-card applications use, and runs complete
// exchanges (chaining, GET RESPONSE, 6Cxx) over a byte-level transport.
//
// It knows no card application and does no I/O itself: profile drivers
// (PIV, OpenPGP, …) build [Command] values, and a [Transmitter] such as a
// PC/SC card, a replay fake or a network proxy moves the bytes. The package
// is pure Go with no dependencies outside the standard library.
//
// # Commands and responses
//
// A [Command] keeps the semantic fields of a C-APDU: CLA, INS, P1, P2, the
// data field and Ne, the number of response bytes expected (256 rather
// than Le = 00). [Command.AppendBinary] chooses the wire form: short length
// fields when they fit, extended ones when the data is longer than 255
// bytes, Ne is above 256 or [Command.Extended] asks for them.
// [ParseCommand] decodes every case of ISO/IEC 7816-3 §12.1.3 (1, 2S, 3S,
// 4S, 2E, 3E, 4E), including the forms real clients send for the same
// command:
//
//	00 20 00 80             empty VERIFY, case 1 (OpenSC)
//	00 20 00 80 00          case 2S, Ne = 256 (piv-go, yubico-piv-tool)
//	00 20 00 80 00 00 00    case 2E, Ne = 65536 (ykman)
//
// Parsing is strict (no trailing bytes, no Lc of 0, lengths must match the
// input) and exact: whatever ParseCommand accepts, MarshalBinary gives back
// byte for byte. This property is fuzzed. Every decoding error wraps
// [ErrMalformed], and no input makes the package panic.
//
// A [Response] is the data field plus a [StatusWord]; [ParseResponse]
// splits the last two bytes off.
//
// # Status words are errors
//
// Every [StatusWord] other than 9000 is used as an error value; 9000 never
// is ([StatusWord.Err] returns nil for it). Its [StatusWord.Is]
// method matches classes of status words against sentinel errors, so
// meaning survives any amount of wrapping:
//
//	_, err := conn.Do(ctx, verify)
//	var sw apdu.StatusWord
//	switch {
//	case errors.Is(err, apdu.ErrWrongPIN):
//		errors.As(err, &sw)
//		n, _ := sw.Retries() // 63Cx, or 630x from old YubiKeys
//	case errors.Is(err, apdu.ErrBlocked): // 6983
//	}
//
// The sentinels are [ErrWrongPIN], [ErrBlocked], [ErrSecurityStatus],
// [ErrNotFound], [ErrWrongLength], [ErrWrongData], [ErrConditions],
// [ErrNotSupported], [ErrIncorrectParams], [ErrNoSpace] and
// [ErrRefDataUnusable]; [StatusWord.Is] lists which status words belong to
// each. Profile packages should wrap a StatusWord in their own error types,
// never replace it.
//
// # BER-TLV
//
// Card applications use BER-TLV loosely: the PIV certificate container
// "53 L { 70 L <cert> 71 01 00 FE 00 }" has a "constructed" tag 70 holding
// a DER certificate, and an empty "FE 00". [ParseTLVs] therefore parses one
// flat level and never recurses unless asked through [TLV.Children]. Tags
// are kept as their wire bytes (0x5FC105, 0x7F49), 1 to 3 bytes long;
// lengths may use the short form or 81, 82 and 83. [FindTLV] looks up one
// tag, and [AppendTLV], [AppendTag] and [AppendLength] build data objects
// with minimal length fields.
//
// # Exchanges
//
// [Conn] wraps a [Transmitter] (one raw C-APDU in, one raw R-APDU out) and
// implements the transport rules of ISO/IEC 7816-4 that every profile
// needs: command chaining with CLA bit 0x10 (or extended lengths when
// [Conn.Extended] says the card takes them), response chaining with 61xx
// and GET RESPONSE, and one retry after 6Cxx. [Conn.Do] returns the
// assembled data and the final status word as the error.
//
// A hostile or broken card cannot make Do loop or allocate without bound:
// [Conn.MaxGetResponse] caps GET RESPONSE rounds, [Conn.MaxResponse] caps
// the assembled data, and exceeding either returns an error wrapping
// [ErrResponseTooLong]. Do checks the context before the first APDU but
// then completes the sequence, because a half-finished chain leaves the
// card in an undefined state; the Transmitter enforces the context on each
// single exchange.
//
// # Concurrency
//
// [Command], [Response], [TLV] and [StatusWord] are plain values, safe for
// concurrent use when nobody modifies them (or the slices they refer to).
// Parsed values alias their input. A [Conn] must be used by one goroutine
// at a time.
package apdu
