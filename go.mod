module github.com/pscs/pscs

go 1.26.0

require (
	github.com/ebfe/scard v0.0.0-20241214075232-7af069cabc25
	github.com/fxamacker/cbor/v2 v2.10.0
	github.com/google/go-tpm v0.9.8
	github.com/google/go-tpm-tools v0.4.11
	github.com/quic-go/quic-go v0.65.0
	github.com/veraison/go-cose v1.3.0
	golang.org/x/crypto v0.54.0
	golang.org/x/term v0.48.0
)

require (
	github.com/x448/float16 v0.8.4 // indirect
	golang.org/x/net v0.56.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
