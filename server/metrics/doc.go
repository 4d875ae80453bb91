// Package metrics is pscsd's operational surface: Prometheus metrics and a
// health endpoint, served by one http.Handler meant for an admin listener
// bound to loopback (for example 127.0.0.1:9464). It is not for the public
// protocol listener: the exposition names every configured card and member.
//
// # Use
//
//	m := metrics.New()
//	m.AddCheck("vault", func(ctx context.Context) error { return v.Ping(ctx) })
//	go http.Serve(adminLn, m.Handler())
//	...
//	start := time.Now()
//	code := handle(req)
//	m.Request("sign", code, time.Since(start))
//
// A Metrics value is safe for concurrent use by any number of goroutines.
// Every recording method is cheap (a map look-up and an atomic add) and never
// blocks on I/O. Each Metrics has its own Prometheus registry; nothing is
// registered with the global default registry, so several instances (as in
// tests) do not collide.
//
// # Endpoints
//
//	GET /metrics  Prometheus exposition (text format, or protobuf/OpenMetrics
//	              when the scraper asks for it; gzip when accepted).
//	GET /healthz  200 "ok" when every registered check passed within 1 s;
//	              503 "unhealthy: name1 name2" otherwise, listing only the
//	              names of the failing checks, sorted. Error texts returned
//	              by checks are never written to the body, so a check may
//	              wrap an error that mentions a path or key id without that
//	              leaking. A check that has not returned after 1 s counts as
//	              failed; checks run concurrently, so /healthz answers
//	              within about 1 s whatever the checks do.
//
// Any other path answers 404.
//
// # Metrics
//
// Durations are in seconds. Latency histograms share the buckets
// 1 ms, 2.5 ms, 5 ms, 10 ms, 25 ms, 50 ms, 100 ms, 250 ms, 500 ms, 1 s,
// 2.5 s, 5 s, 10 s (+Inf).
//
//	pscs_requests_total{op, code}               counter
//	    Protocol requests answered, by operation and by the protocol's
//	    numeric result code as a decimal string ("0" ok, "101" revoked,
//	    ...). Recorded by Request.
//	pscs_request_seconds{op}                    histogram
//	    Time to answer a request, by operation. Recorded by Request.
//	pscs_refusals_total{reason}                 counter
//	    Requests refused, by short reason name: "revoked",
//	    "outside_window", "limit", "wrong_vpin", "locked", "denied",
//	    "replay", "bad_signature", ... Recorded by Refusal.
//	pscs_queue_depth{card}                      gauge
//	    Operations waiting for a remote (pooled) card. Set by QueueDepth.
//	pscs_cards_present{card}                    gauge
//	    Physical cards currently present behind a remote card. Set by
//	    CardsPresent (pscsd: at each request, and as soon as a card
//	    joins or leaves).
//	pscs_card_seconds{card, member}             histogram
//	    Latency of one operation on one physical card (member) of a
//	    remote card. Recorded by CardOp.
//	pscs_card_busy_seconds_total{card, member}  counter
//	    Total time a physical card spent busy. Its rate is the card's
//	    utilisation (0..1): rate(pscs_card_busy_seconds_total[5m]).
//	    Recorded by CardOp.
//	pscs_connections                            gauge
//	    Open transport connections. Set by Connections.
//	pscs_limit{limit}                           gauge
//	pscs_limit_in_use{limit}                    gauge
//	pscs_limit_refusals_total{limit, code}      counter
//	    Each resource limit of the transport (transport.Limits): its
//	    configured value (negative: none), its use now (for a limit of
//	    each identity, the highest among identities; for request_rate,
//	    the emptiest token bucket) and its refusals, with the refusal
//	    code ("0": refused by QUIC itself: a Retry asked for, a
//	    connection attempt refused). Read at every scrape from the
//	    function given to AddLimits. limit is one of
//	    connections_per_identity, streams_per_identity, request_rate,
//	    nonces_per_identity, request_bytes_per_identity, request_bytes,
//	    retry_handshakes, handshakes.
//	pscs_health_check_ok{check}                 gauge
//	    1 if the named health check passed on the last /healthz request,
//	    0 if it failed or timed out. Appears once /healthz has been asked.
//
// The registry also carries the standard Go runtime (go_*) and process
// (process_*) collectors.
//
// # Label values
//
// Label values must stay few, or the server's memory and every scrape grow
// without bound. The rules:
//
//   - op, reason: constants chosen by the server code, never text from a
//     request.
//   - code: the protocol's numeric result code; the set of codes is fixed.
//   - card, member: names from the server's configuration (the remote card's
//     name and its members' configured names), never anything a client
//     sends, and never a card serial read from the wire.
//   - Never put an identity's secret, PIN, vPIN, key material or token in
//     any label: the exposition is readable by anyone who can reach the
//     admin listener, and Prometheus keeps it.
//
// As a safety net, each label keeps at most 256 distinct values per metric;
// further new values are recorded as "_other". Values longer than 64 bytes
// are cut, invalid UTF-8 is replaced and an empty value becomes "_none", so
// a bad caller cannot make the registry panic or balloon. ForgetCard drops a card's series when a
// configuration reload removes it.
package metrics
