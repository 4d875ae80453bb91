package anchor

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// KeyFileName is the checkpoint key's file in its directory.
const KeyFileName = "checkpoint.key"

// keyFileMagic starts the key file, followed by three fields, each a
// 2-byte big-endian length and its bytes: the Name of the storage root key
// it was created under, the key's TPM2B_PUBLIC contents and its
// TPM2B_PRIVATE contents (wrapped by the TPM).
const keyFileMagic = "pscs checkpoint key v1\n"

// keyAttributes: generated in this TPM and never leaving it, sign only.
var keyAttributes = tpm2.TPMAObject{
	FixedTPM:            true,
	FixedParent:         true,
	SensitiveDataOrigin: true,
	UserWithAuth:        true,
	NoDA:                true,
	SignEncrypt:         true,
}

var keyTemplate = tpm2.TPMTPublic{
	Type:             tpm2.TPMAlgECC,
	NameAlg:          tpm2.TPMAlgSHA256,
	ObjectAttributes: keyAttributes,
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		CurveID: tpm2.TPMECCNistP256,
		Scheme: tpm2.TPMTECCScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
		},
	}),
}

// Key is the checkpoint key: an ECDSA P-256 key in the TPM. It implements
// server/audit.Signer. It is safe for concurrent use when its Do
// serializes.
type Key struct {
	do      Do
	srkName []byte
	public  tpm2.TPM2BPublic
	private tpm2.TPM2BPrivate
	pub     *ecdsa.PublicKey
}

// OpenKey loads the checkpoint key kept in dir, or has the TPM generate one
// and keeps it there (mode 0600). A key file made on another TPM fails
// here, at its first use.
func OpenKey(do Do, dir string) (*Key, error) {
	path := filepath.Join(dir, KeyFileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if b, err = createKey(do); err != nil {
			return nil, err
		}
		if err := writeNew(path, b); err != nil {
			return nil, err
		}
		b, err = os.ReadFile(path) // ours, or one that won a race
	}
	if err != nil {
		return nil, fmt.Errorf("anchor: %w", err)
	}
	k, err := parseKeyFile(b)
	if err != nil {
		return nil, fmt.Errorf("anchor: %s: %w", path, err)
	}
	k.do = do
	// Try it now rather than at the first checkpoint.
	if _, err := k.SignDigest(context.Background(), make([]byte, 32)); err != nil {
		return nil, err
	}
	return k, nil
}

// Public is the key's public key, for its certificate.
func (k *Key) Public() *ecdsa.PublicKey { return k.pub }

// SignDigest signs a SHA-256 digest inside the TPM and returns an ASN.1
// DER ECDSA signature.
func (k *Key) SignDigest(ctx context.Context, digest []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(digest) != 32 {
		return nil, fmt.Errorf("anchor: digest of %d bytes, want 32", len(digest))
	}
	var der []byte
	err := retry(ctx, k.do, func(tpm transport.TPM) error {
		s, err := createSRK(tpm)
		if err != nil {
			return err
		}
		defer flush(tpm, s.handle)
		if !bytes.Equal(s.name.Buffer, k.srkName) {
			return fmt.Errorf("anchor: the checkpoint key belongs to another TPM (its storage root key is %x, this TPM's %x)", k.srkName, s.name.Buffer)
		}
		l, err := tpm2.Load{
			ParentHandle: tpm2.AuthHandle{Handle: s.handle, Name: s.name, Auth: tpm2.PasswordAuth(nil)},
			InPrivate:    k.private,
			InPublic:     k.public,
		}.Execute(tpm)
		if err != nil {
			return fmt.Errorf("anchor: TPM Load (checkpoint key): %w", err)
		}
		defer flush(tpm, l.ObjectHandle)
		rsp, err := tpm2.Sign{
			KeyHandle: tpm2.AuthHandle{Handle: l.ObjectHandle, Name: l.Name, Auth: tpm2.PasswordAuth(nil)},
			Digest:    tpm2.TPM2BDigest{Buffer: digest},
			InScheme: tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256})},
			Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck},
		}.Execute(tpm)
		if err != nil {
			return fmt.Errorf("anchor: TPM Sign: %w", err)
		}
		sig, err := rsp.Signature.Signature.ECDSA()
		if err != nil {
			return fmt.Errorf("anchor: TPM Sign: %w", err)
		}
		der, err = asn1.Marshal(struct{ R, S *big.Int }{
			new(big.Int).SetBytes(sig.SignatureR.Buffer), new(big.Int).SetBytes(sig.SignatureS.Buffer)})
		return err
	})
	if err != nil {
		return nil, err
	}
	if !ecdsa.VerifyASN1(k.pub, digest, der) {
		return nil, errors.New("anchor: the TPM's checkpoint signature does not verify")
	}
	return der, nil
}

func createKey(do Do) ([]byte, error) {
	var out []byte
	err := do(func(tpm transport.TPM) error {
		s, err := createSRK(tpm)
		if err != nil {
			return err
		}
		defer flush(tpm, s.handle)
		rsp, err := tpm2.Create{
			ParentHandle: tpm2.AuthHandle{Handle: s.handle, Name: s.name, Auth: tpm2.PasswordAuth(nil)},
			InPublic:     tpm2.New2B(keyTemplate),
		}.Execute(tpm)
		if err != nil {
			return fmt.Errorf("anchor: TPM Create (checkpoint key): %w", err)
		}
		out = []byte(keyFileMagic)
		for _, f := range [][]byte{s.name.Buffer, rsp.OutPublic.Bytes(), rsp.OutPrivate.Buffer} {
			out = binary.BigEndian.AppendUint16(out, uint16(len(f)))
			out = append(out, f...)
		}
		return nil
	})
	return out, err
}

// parseKeyFile reads a key file and checks that its key is one this
// package creates.
func parseKeyFile(b []byte) (*Key, error) {
	rest, ok := bytes.CutPrefix(b, []byte(keyFileMagic))
	if !ok {
		return nil, errors.New("not a pscs checkpoint key file")
	}
	var f [3][]byte
	for i := range f {
		if len(rest) < 2 {
			return nil, errors.New("key file truncated")
		}
		n := int(binary.BigEndian.Uint16(rest))
		if len(rest) < 2+n {
			return nil, errors.New("key file truncated")
		}
		f[i], rest = rest[2:2+n], rest[2+n:]
	}
	if len(rest) != 0 {
		return nil, errors.New("bytes after the key")
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](f[1])
	if err != nil {
		return nil, fmt.Errorf("public area: %w", err)
	}
	if pub.Type != tpm2.TPMAlgECC || pub.NameAlg != tpm2.TPMAlgSHA256 || pub.ObjectAttributes != keyAttributes || len(pub.AuthPolicy.Buffer) != 0 {
		return nil, errors.New("not a TPM-bound ECDSA signing key")
	}
	parms, err := pub.Parameters.ECCDetail()
	if err != nil || parms.CurveID != tpm2.TPMECCNistP256 {
		return nil, errors.New("not a P-256 key")
	}
	point, err := pub.Unique.ECC()
	if err != nil {
		return nil, err
	}
	if len(point.X.Buffer) > 32 || len(point.Y.Buffer) > 32 {
		return nil, errors.New("public key not on P-256")
	}
	var raw [65]byte // SEC 1 uncompressed: 04 || X || Y
	raw[0] = 4
	copy(raw[33-len(point.X.Buffer):33], point.X.Buffer)
	copy(raw[65-len(point.Y.Buffer):], point.Y.Buffer)
	ecPub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw[:])
	if err != nil {
		return nil, errors.New("public key not on P-256")
	}
	return &Key{
		srkName: f[0],
		public:  tpm2.BytesAs2B[tpm2.TPMTPublic](f[1]),
		private: tpm2.TPM2BPrivate{Buffer: f[2]},
		pub:     ecPub,
	}, nil
}

// writeNew writes a new file durably, failing if it exists.
func writeNew(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("anchor: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("anchor: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("anchor: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("anchor: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("anchor: %w", err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("anchor: %w", err)
	}
	defer d.Close()
	return d.Sync()
}

type srk struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
}

// createSRK creates the owner hierarchy's ECC P-256 storage root key (the
// same one the vault uses: the TPM derives it from the owner seed).
func createSRK(tpm transport.TPM) (*srk, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("anchor: TPM CreatePrimary (SRK): %w", err)
	}
	return &srk{handle: rsp.ObjectHandle, name: rsp.Name}, nil
}

func flush(tpm transport.TPM, h tpm2.TPMHandle) {
	_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(tpm)
}
