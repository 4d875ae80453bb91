// Package transport is the pscs protocol: the messages a delegate and
// pscsd exchange, their encoding and limits, the signed requests, the
// refusal codes, and the server side of the connection. Read this first if
// you implement the protocol; docs/protocol.md has every wire detail (the
// CDDL of each message, the codes, worked examples that its test decodes
// with this package's strict decoder). The Go client is package client.
//
// # What the protocol is
//
// CBOR over QUIC, with mutual TLS 1.3 (ALPN [ALPN], "pscs/1"):
//
//   - Connection. The client verifies the server's certificate and presents
//     its own; the server maps it to an enrolled identity ([Enrollment])
//     or closes the connection with code [CodeNotEnrolled] or
//     [CodeCertExpired]; over [Limits.ConnectionsPerIdentity],
//     [CodeTooManyConnections]. A refusal waits for the handshake to
//     complete, so that the code reaches the client (earlier, QUIC would
//     carry no code); the identity of a new connection is taken then too,
//     a resumed one's at once from its ticket. Session tickets and 0-RTT
//     are on.
//   - One request per stream. The client opens a bidirectional stream,
//     writes one CBOR [Request] and ends its side; the server answers one
//     [Response] (its Status is [CodeOK] or a refusal) and ends its side.
//     Requests run in parallel on parallel streams.
//   - Events. The server may open one unidirectional stream of [Event]s
//     (the catalogue changed, a card came or went, a delegation was
//     revoked, the server is going away), each framed by its length as a
//     QUIC variable-length integer ([AppendEventFrame], [ReadEventFrame]).
//   - Encoding. Deterministic CBOR with integer map keys. Every decoder
//     ([Unmarshal]) refuses duplicate keys, indefinite lengths, invalid
//     UTF-8, tags, trailing bytes and anything over the limits
//     ([MaxRequestSize], [MaxResponseSize], [MaxEventSize], [MaxNesting],
//     [MaxElements]); it ignores map keys it does not know, because fields
//     and operations are only ever added ([ProtocolVersion]).
//
// # Signed requests
//
// Every operation that changes state ([Op.Signed]: Login, Sign, Decrypt,
// Logout, Admin) travels as a COSE_Sign1 ([SignPayload], [VerifyPayload])
// made with the key of the client's certificate over a [SignedPayload]:
//
//   - a fresh 16-byte nonce ([NonceSize]): the server remembers every
//     nonce it accepted, and answers a second copy with [CodeReplay]
//     without running it again (a client's own resend after a lost
//     connection gets the first answer back);
//   - the client's time: outside the server's window (default ±2 min)
//     the request is [CodeStale];
//   - the binding, the TLS exporter value of the connection
//     ([BindingLabel], [BindingSize]): a request bound to another
//     connection is [CodeBadBinding]. Only 0-RTT early data goes unbound.
//
// The signed payload is the evidence the server keeps in its audit log; a
// virtual PIN therefore travels beside it, in the Request's secret field,
// never inside it.
//
// # Doing a request, as a client
//
//  1. Dial QUIC with ALPN "pscs/1" and the client certificate; send
//     OpHello ([HelloRequest], unsigned). The [HelloResponse] carries the
//     catalogue of the identity's remote cards: slots, tokens, objects and
//     mechanisms, from which a client answers every metadata question
//     locally.
//  2. OpLogin ([LoginRequest], signed, the virtual PIN as the secret) for
//     a slot; then OpSign ([SignRequest], signed) as often as needed, one
//     round trip each on a warm connection.
//  3. Read the Response's Status (package client returns a refusal as an
//     [*Error]; [CodeOf] reads the code of any error): codes below 100 are the transport's (malformed, too large, replay,
//     busy, limits), 100-199 the server's policy (denied, wrong PIN,
//     locked, no such key), 200 and up the card's. Codes never change
//     meaning ([Code]).
//  4. Watch the event stream; on [EventCatalogue] or [EventSlot] send
//     Hello again.
//
// # The server side
//
// [Server] accepts connections on a net.PacketConn, identifies the peer,
// enforces the per-identity and global [Limits] (connections, streams,
// request rate, replay memory, bytes held), checks signatures, nonces,
// time and binding, and hands each valid request to a [Handler] as a
// [Call]. A Handler returns a body or an error; an [*Error] carries its
// code to the client, any other error becomes [CodeInternal] with the
// details only in the server's log. [Conn.Notify] sends events.
package transport
