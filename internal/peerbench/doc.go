// Package peerbench measures pscs beside its peers in the same run: one
// whole `pkcs11-tool --login --sign` process, and its round trips, through
// pscs's PKCS #11 module to pscsd over QUIC, and through p11-kit's remoting
// (p11-kit-client.so → p11-kit server → SoftHSM) over a unix socket, each
// behind a relay that adds the same delay (internal/netsim). It holds only
// benchmarks: go test -run '^$' -bench . ./internal/peerbench.
package peerbench
