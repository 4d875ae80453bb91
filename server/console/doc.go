// Package console is the owners' web console of pscsd: an HTTPS site, on
// its own listener, where an owner sees their remote cards live, grants,
// revokes and unlocks delegations, issues and enrolls delegates, reads,
// filters, verifies and exports their audit records, and reads charts of
// signatures, signing latency and pool utilisation.
//
// # Logging in
//
// An owner opens the console in one of two ways:
//
//   - a one-time link, which `pscs admin console` asks for with a signed
//     administration request (action "console"): the link holds a random
//     token, valid once and for [Config.TokenTTL] (2 minutes by default),
//     bound to that owner. Opening it shows a page with one button, a
//     form that posts the token (POST /login) with a CSRF token of that
//     page's own (beside the cookie [LoginCookieName]), from the
//     console's origin: a link fetched by a mail scanner is not spent, and
//     another site cannot log a browser into a session of its choosing
//     (login CSRF). The form sets the session cookie and redirects to a
//     page whose address holds no secret; a second use, an expired or
//     unknown token is refused. Wrong tokens, and only they, are counted
//     per client address (an IPv6 address by its /64, [MaxBadAddrs]
//     addresses at most): the [MaxBadTokens]-th within [BadTokenWindow]
//     has the address refused for [BadTokenLockout]. Good links neither
//     count nor clear the count.
//   - the owner's client certificate (the one their client.conf names),
//     which the listener asks for but does not require: a certificate
//     issued by pscsd's CA and enrolled to an owner logs in directly, on
//     a page of the console's own, an address typed in, or a link
//     followed from another site; not on what another site's page loads
//     (images, frames, fetches), which would end the owner's sessions
//     past [MaxSessionsPerOwner].
//
// A session lasts [Config.IdleTimeout] without a request (15 minutes by
// default) and [Config.MaxSession] in all (8 hours). Its cookie is
// "__Host-pscs-session": Secure, HttpOnly, SameSite=Strict, Path=/.
// Tokens and session identifiers are kept only as SHA-256 digests, in
// memory: a restart of pscsd ends every session. An owner has
// [MaxSessionsPerOwner] sessions at most (a new one ends the oldest), a
// session [MaxNonces] unused form nonces (a new one forgets the oldest)
// and [MaxStreams] live pages' event streams (one more is refused with
// 429).
//
// # Administration
//
// Every change the console makes is an administration request of the
// owner's, run by the server's own OpAdmin path ([server.Server.AdminAs]):
// the same checks and the same audit record as `pscs admin`, without a
// signature (the record's Via names the console session by a short tag
// of its digest). A new delegation's virtual PIN appears once, in the
// answer to the form that created it (sent with Cache-Control: no-store);
// each form of that kind carries a one-time nonce, so that reloading the
// answer grants nothing twice and shows no vPIN again.
//
// # Web security
//
// Every state change is a POST carrying the session's CSRF token, from a
// page of the console's own origin (the Origin header is checked). Pages
// are sent with a Content-Security-Policy allowing only the console's own
// scripts, styles and images (no inline script, no framing), with
// X-Content-Type-Options: nosniff, Referrer-Policy: no-referrer and
// Cache-Control: no-store. An owner sees and acts on their own cards,
// the delegations on them and the audit records an export would show
// them, whatever IDs a crafted request names.
//
// # Live pages
//
// The cards page and the audit page follow server-sent events
// (/events/cards, /events/audit): the cards' state every
// [Config.SampleEvery], and each new audit record as it is written
// (pscsd calls [Console.Appended]); an idle stream gets a comment every
// [Config.KeepAlive] (20 seconds) so that proxies keep it open, and a
// stream ends with its session. The page's status line says whether it
// is live, reconnecting, or ended: the session ended, or it has too many
// live pages open (the script asks /events/check why a stream failed).
// The script is plain JavaScript embedded in pscsd; nothing is fetched
// from elsewhere.
package console
