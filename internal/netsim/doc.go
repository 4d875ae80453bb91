// Package netsim is an in-process UDP proxy that simulates a slow or lossy
// network link between a UDP client (typically a QUIC client) and a UDP
// server, all on the loopback interface.
//
// It exists because the test kernel has no netem qdisc: fixed delay, jitter,
// loss, duplication and reordering cannot be configured with tc. Instead the
// client dials the proxy, the proxy forwards every datagram to the real
// server after applying the configured conditions, and forwards the server's
// replies back the same way.
//
// # Topology
//
//	client ──► Proxy.Addr() ─┐                  ┌─► upstream (server)
//	                         │  per-client       │
//	client ◄── listener  ◄───┘  upstream socket ◄┘
//
// [New] opens one listening socket on 127.0.0.1 with a kernel-chosen port;
// clients send to [Proxy.Addr]. Every distinct client address (IP and port)
// gets its own upstream socket, so the server sees one distinct source
// address per client, as behind a NAT. Mappings live until [Proxy.Close];
// there is no idle expiry.
//
// # Usage
//
//	srv, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
//	p, err := netsim.New(srv.LocalAddr().String(), netsim.Config{
//		Delay: 25 * time.Millisecond, // RTT grows by 50 ms
//		Loss:  0.01,
//		Seed:  1,
//	})
//	if err != nil { ... }
//	defer p.Close()
//	// point the QUIC client at p.Addr() instead of the server address
//
// # Link model
//
// Each direction (client→server and server→client) is an independent link
// with the same [Config]. For every datagram arriving at the proxy, in this
// order:
//
//  1. Loss: with probability Loss the packet is dropped.
//  2. Rate: if RateBytesPerSec > 0 the packet is serialised behind earlier
//     packets of the same direction at that rate (a FIFO "wire"); if the
//     wire is more than one second behind, the packet is tail-dropped and
//     counted as Overflow.
//  3. Delay and jitter: the packet is released Delay plus a uniform value
//     in [0, Jitter) after it left the wire (or arrived, without a rate cap).
//  4. Reorder: with probability Reorder the packet is held back an extra
//     max(Delay/2, Jitter, 1ms), so packets sent shortly after it overtake it.
//  5. Duplicate: with probability Duplicate a second copy is released at
//     the same base time with its own jitter (never held back by Reorder).
//
// Release times are kept in a min-heap served by one scheduler goroutine
// using a timer, so a long-delayed packet never blocks a later one that is
// due earlier, and the proxy does not spin. Packets with equal release times
// leave in arrival order. Timing error is dominated by the Go timer (about
// 1 ms on Linux): with Delay = 50 ms a loopback request/echo measures close to
// 100 ms. Datagrams up to 64 KiB are supported.
//
// # Determinism
//
// All random decisions come from math/rand/v2 PCG generators seeded with
// Config.Seed, one independent stream per direction. Every packet consumes
// the same number of random values whatever the outcome, so the decisions
// for the n-th packet of a direction depend only on Seed, the Config and n:
// the same seed and the same packet sequence give the same drops,
// duplicates, reorders and jitter. [Proxy.SetConfig] reseeds both streams
// from the new Seed, so decisions restart from the beginning of the stream.
// Packets already queued keep their release times when the config changes.
//
// # Round trips ("flights")
//
// [Proxy.Flights] counts client flights: a client→server datagram arriving
// at the proxy starts a new flight if at least one server→client datagram
// has been forwarded since the previous flight started. The first client
// datagram after [New] or [Proxy.ResetCounters] always starts a flight.
// Client datagrams are counted on arrival, even when Loss then drops them,
// so a retransmission without an intervening server reply is part of the
// same flight. The counter is proxy-wide: with several concurrent clients
// their flights interleave, so measure one connection at a time. A QUIC
// 1-RTT handshake followed by a request typically shows 2 flights, a 0-RTT
// resumption with an early request 1.
//
// # NAT rebinding
//
// [Proxy.Rebind] gives every existing client mapping a new upstream socket
// (hence a new source port seen by the server) and closes the old one;
// datagrams the server still sends to the old port are lost, as with a real
// NAT rebinding. Queued client→server datagrams are sent from the new socket.
// This exercises QUIC connection migration / path validation.
//
// # Record and replay
//
// [Proxy.RecordFirstFlight](true) arms the recorder: the next client mapping
// that is created has the datagrams of its first flight (everything the
// client sends until the first server→client datagram is forwarded back to
// it) recorded as they arrive at the proxy, before loss is applied.
// [Proxy.Replay] then re-sends those datagrams to the server, immediately
// and without simulated conditions, from a fresh socket with a new source
// port, as an on-path attacker replaying a 0-RTT flight would
// ([Proxy.Recorded] returns what will be replayed). Replies to
// the replay socket are read and discarded (counted in Stats.ReplayReplies);
// the socket is closed after five seconds without a reply or on Close.
//
// # Concurrency and lifetime
//
// A [Proxy] is safe for concurrent use by multiple goroutines: every method
// may be called at any time, including concurrently with traffic. [Config]
// and [Stats] are plain values, safe to copy. [Proxy.Close] stops all
// goroutines the proxy started (listener reader, scheduler, one reader per
// upstream socket, one per replay socket), closes all sockets, discards
// queued packets and waits for the goroutines to exit before returning; it
// is idempotent. After Close, Replay returns an error and the other methods
// are harmless no-ops (Stats and Flights still report the final values).
package netsim
