// Package simkit is the kit for writing a smart-card simulator: it does what
// every ISO 7816-4 card does the same way, so that a simulator holds only
// what its card application does differently.
//
// pivsim (PIV) and pgpsim (OpenPGP card 3.4) are written on it; read them as
// worked examples.
//
// # Writing a simulator
//
// A simulator is an [Applet]: a type with a Handle method that answers one
// whole command, and a Reset method that forgets the session (verified
// PINs, half-done exchanges). Wrap it in a [Card]:
//
//	type applet struct { pin *simkit.PIN; verified bool; ... }
//
//	func (a *applet) Handle(cmd apdu.Command) simkit.Reply {
//		switch cmd.INS {
//		case 0x20:
//			st := a.pin.Check(cmd.Data)
//			a.verified = st == apdu.SWSuccess
//			return simkit.Reply{SW: st, Delay: a.lat.Verify}
//		}
//		return simkit.Status(apdu.SWINSNotSupported)
//	}
//	func (a *applet) Reset() { a.verified = false }
//
//	card := simkit.New(&applet{...}, simkit.Options{ATR: atr, Latency: lat})
//
// The Card is a cards.Transmitter for tests in process, and a vpcd.Card
// (ATR, Transmit, Reset): plug it into a real pcscd with cards/vpcd, where
// every PC/SC client sees it in a reader ([simkittest.Plug] does that in
// tests and waits until pcscd shows the card). Export the Card's methods by
// embedding it:
//
//	type Card struct {
//		*simkit.Card
//		a *applet
//	}
//
// and read the applet's state from accessors under the card's lock
// ([Card.Locked]): the Card calls Handle with that lock held, one command
// at a time, as a real card processes them.
//
// # What the Card does before Handle
//
//   - Parsing: a command that is not a well-formed short or extended APDU
//     answers 67 00; a class other than 00 or 10 answers 6E 00. Handle sees
//     an [apdu.Command] with its real lengths (Ne = 256 for a short Le of
//     00, 65536 for an extended 0000) and Extended set when the command
//     used extended lengths.
//   - Command chaining (ISO 7816-4 5.1.1.1): a command with CLA bit 10
//     set is a block of a longer command. The Card answers 90 00 and keeps
//     its data; the last block (bit 10 clear, same INS, P1 and P2) reaches
//     Handle with the data of all blocks. A block with another INS, P1 or P2
//     starts again; more than [Options.MaxChain] bytes (4096 by default)
//     answer 67 00 and drop the chain.
//   - Response chaining: when the answer is longer than the command's Ne
//     (256 when the command had no Le, or a short one), the Card returns
//     the first Ne bytes with 61 xx (xx bytes remain, 00 for 256 or more)
//     and keeps the rest for GET RESPONSE (INS C0), which answers Ne bytes
//     at a time the same way. GET RESPONSE with nothing pending answers
//     69 85; any other command drops what is pending.
//   - Status words other than 90 00 carry no data, as on most cards.
//
// # PINs
//
// A [PIN] is a secret with a retry counter: [PIN.Check] compares in
// constant time, resets the counter on success, and on failure counts down
// and answers 63 Cx (x tries left), or [PIN.WrongSW] when the card answers
// a wrong PIN otherwise (the YubiKey's OpenPGP application answers 69 82 and
// shows the tries left only in its C4 object). At zero tries the PIN is
// blocked: every check answers 69 83 until [PIN.Unblock] (a PUK or a
// resetting code) sets it again. [PIN.Status] is the answer to an empty
// VERIFY. The PIN does not know who is verified: the applet keeps that, and
// its Reset forgets it.
//
// # Keys
//
// [GenerateKey] makes a key of any [Alg] the supported families use (RSA
// 1024 to 4096, NIST P-256/384/521, Ed25519, X25519). With a seed the key is
// a function of seed and label: a simulator seeded from the test name has
// the same keys on every run, which makes failures reproducible and
// fixtures possible. [SeedReader] gives the same stream for serial numbers
// and identifiers. Without a seed, keys come from crypto/rand. The keys are
// test keys held in ordinary memory.
//
// Helpers for the private-key operations cards do in their own ways:
// [RawRSA] (m^d mod n, for cards where the host pads), [SignECDSARaw]
// (r‖s, as OpenPGP cards answer), [ECDH].
//
// # Latency
//
// [Latency] is how long a card takes per kind of operation; the zero value
// (what tests use) answers at once. [YubiKey5] holds the figures measured
// on a YubiKey 5.4.3 (cards.md section 6). A Handle puts the delay in its
// [Reply]; the Card answers only after it, or returns the context's error
// when the caller gives up first. Timing is for benchmarks and demos: tests
// never assert on it beyond "a cancelled context stops the wait".
package simkit
