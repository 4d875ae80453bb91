package vault

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// srkTemplate is the parent of the vault key: the TCG ECC P-256 storage root
// key template, which the TPM derives deterministically from the owner
// hierarchy's seed, so the same TPM gives the same key every time and
// nothing needs to be persisted in the TPM.
var srkTemplate = tpm2.ECCSRKTemplate

// keyAttributes are the vault key's attributes: it never leaves this TPM
// (FixedTPM, FixedParent), its value was generated inside it
// (SensitiveDataOrigin), it is used with an authValue (empty: access to the
// TPM is the only credential) and never counts toward dictionary-attack
// lockout (NoDA: a wrong vPIN never reaches the TPM's authorization anyway),
// and it only computes HMACs (SignEncrypt, not Restricted, not Decrypt).
var keyAttributes = tpm2.TPMAObject{
	FixedTPM:            true,
	FixedParent:         true,
	SensitiveDataOrigin: true,
	UserWithAuth:        true,
	NoDA:                true,
	SignEncrypt:         true,
}

// keyTemplate is the vault key: an HMAC-SHA256 keyed-hash object.
var keyTemplate = tpm2.TPMTPublic{
	Type:             tpm2.TPMAlgKeyedHash,
	NameAlg:          tpm2.TPMAlgSHA256,
	ObjectAttributes: keyAttributes,
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
		Scheme: tpm2.TPMTKeyedHashScheme{
			Scheme: tpm2.TPMAlgHMAC,
			Details: tpm2.NewTPMUSchemeKeyedHash(tpm2.TPMAlgHMAC, &tpm2.TPMSSchemeHMAC{
				HashAlg: tpm2.TPMAlgSHA256,
			}),
		},
	}),
}

// checkKeyPublic verifies that pub is a key this package would have created,
// so a substituted key file cannot downgrade the key (e.g. to a duplicable
// one).
func checkKeyPublic(pub *tpm2.TPMTPublic) error {
	return checkPublic(pub, keyAttributes)
}

// checkPublic verifies that pub is an HMAC-SHA256 keyed-hash object with
// exactly the attributes attrs and no policy.
func checkPublic(pub *tpm2.TPMTPublic, attrs tpm2.TPMAObject) error {
	if pub.Type != tpm2.TPMAlgKeyedHash || pub.NameAlg != tpm2.TPMAlgSHA256 {
		return errors.New("not a SHA-256 keyed-hash object")
	}
	if pub.ObjectAttributes != attrs {
		return fmt.Errorf("object attributes %+v, want %+v", pub.ObjectAttributes, attrs)
	}
	if len(pub.AuthPolicy.Buffer) != 0 {
		return errors.New("key has an authorization policy")
	}
	kh, err := pub.Parameters.KeyedHashDetail()
	if err != nil {
		return err
	}
	if kh.Scheme.Scheme != tpm2.TPMAlgHMAC {
		return fmt.Errorf("scheme %v, want HMAC", kh.Scheme.Scheme)
	}
	h, err := kh.Scheme.Details.HMAC()
	if err != nil {
		return err
	}
	if h.HashAlg != tpm2.TPMAlgSHA256 {
		return fmt.Errorf("HMAC hash %v, want SHA-256", h.HashAlg)
	}
	return nil
}

// srk is a loaded storage root key.
type srk struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	pub    tpm2.TPMTPublic
}

// createSRK creates the storage root key under the owner hierarchy (with an
// empty owner authValue). The caller must flush it. The Name is computed here
// from the public area rather than trusted from the response, so that a
// comparison with a recorded Name also vouches for the public key used to
// salt sessions.
func createSRK(tpm transport.TPM) (*srk, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(srkTemplate),
	}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("vault: TPM CreatePrimary (SRK): %w", err)
	}
	s := &srk{handle: rsp.ObjectHandle}
	pub, err := rsp.OutPublic.Contents()
	if err == nil {
		var name *tpm2.TPM2BName
		name, err = tpm2.ObjectName(pub)
		if err == nil {
			s.name, s.pub = *name, *pub
		}
	}
	if err != nil {
		flush(tpm, s.handle)
		return nil, fmt.Errorf("vault: TPM CreatePrimary (SRK): %w", err)
	}
	return s, nil
}

// flush unloads a transient object, ignoring errors: there is nothing more
// to do about them, and the TPM frees transient objects at reset anyway.
func flush(tpm transport.TPM, h tpm2.TPMHandle) {
	_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(tpm)
}

// createKey creates a new vault key under the SRK and returns its key file.
// Nothing stays loaded.
func createKey(tpm transport.TPM) (*keyFile, error) {
	s, err := createSRK(tpm)
	if err != nil {
		return nil, err
	}
	defer flush(tpm, s.handle)
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: s.handle, Name: s.name, Auth: tpm2.PasswordAuth(nil)},
		InPublic:     tpm2.New2B(keyTemplate),
	}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("vault: TPM Create (vault key): %w", err)
	}
	return &keyFile{
		Version: keyFileVersion,
		SRKName: s.name.Buffer,
		Public:  tpm2.Marshal(rsp.OutPublic),
		Private: tpm2.Marshal(rsp.OutPrivate),
	}, nil
}

// tpmKey is a vault key as read from its key file.
type tpmKey struct {
	srkName []byte
	public  tpm2.TPM2BPublic
	private tpm2.TPM2BPrivate
	name    tpm2.TPM2BName
}

// hmac computes HMAC-SHA256 with the vault key over data (at most
// [maxHMACInput] bytes) inside the TPM.
//
// Each call creates the SRK, loads the key under it, computes the HMAC and
// flushes both, so that no handle outlives the call: the vault needs no
// resource manager, shares the TPM with other users, and survives TPM resets
// and restarts between calls. The authorization session is an HMAC session
// salted with the SRK, with the response parameter (the HMAC) encrypted with
// AES-128-CFB: a probe on the TPM bus sees neither the HMAC nor can it forge
// a response. The SRK's Name must match the one recorded when the key was
// created, or the key belongs to another TPM ([ErrWrongTPM]).
func (k *tpmKey) hmac(tpm transport.TPM, data []byte) ([]byte, error) {
	if err := checkHMACInput(data); err != nil {
		return nil, err
	}
	s, err := k.srk(tpm)
	if err != nil {
		return nil, err
	}
	defer flush(tpm, s.handle)
	return k.hmacUnder(tpm, s, data)
}

// srk creates the SRK and checks that it is the one the vault key was
// created under. The caller must flush it.
func (k *tpmKey) srk(tpm transport.TPM) (*srk, error) {
	s, err := createSRK(tpm)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(s.name.Buffer, k.srkName) {
		flush(tpm, s.handle)
		return nil, fmt.Errorf("%w: its storage root key is %x, this TPM's is %x (another TPM, or the owner hierarchy was cleared)",
			ErrWrongTPM, k.srkName, s.name.Buffer)
	}
	return s, nil
}

// hmacUnder loads the vault key under s, computes the HMAC and flushes the
// key.
func (k *tpmKey) hmacUnder(tpm transport.TPM, s *srk, data []byte) ([]byte, error) {
	h, err := load(tpm, s, k.public, k.private, k.name)
	if err != nil {
		return nil, err
	}
	defer flush(tpm, h)
	return keyHMAC(tpm, s, h, k.name, nil, data)
}

// load loads an object under s and checks its Name. The caller must flush
// the handle. A private area the TPM cannot verify under this SRK is
// [ErrWrongTPM].
func load(tpm transport.TPM, s *srk, pub tpm2.TPM2BPublic, priv tpm2.TPM2BPrivate, name tpm2.TPM2BName) (tpm2.TPMHandle, error) {
	lrsp, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: s.handle, Name: s.name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    priv,
		InPublic:     pub,
	}.Execute(tpm)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCIntegrity) {
			return 0, fmt.Errorf("%w: TPM Load: %v", ErrWrongTPM, err)
		}
		return 0, fmt.Errorf("vault: TPM Load: %w", err)
	}
	if !bytes.Equal(lrsp.Name.Buffer, name.Buffer) {
		flush(tpm, lrsp.ObjectHandle)
		return 0, fmt.Errorf("vault: TPM loaded a key as %x, want %x", lrsp.Name.Buffer, name.Buffer)
	}
	return lrsp.ObjectHandle, nil
}

// keyHMAC runs TPM2_HMAC with the loaded key h, whose authValue is auth,
// in a one-use HMAC session salted with s and with the response encrypted:
// neither auth nor the HMAC crosses the bus in clear. auth enters only
// the session's HMAC key. For a DA-protected key, a wrong auth is a
// TPM_RC_AUTH_FAIL that the TPM counts toward its lockout.
func keyHMAC(tpm transport.TPM, s *srk, h tpm2.TPMHandle, name tpm2.TPM2BName, auth, data []byte) ([]byte, error) {
	if err := checkHMACInput(data); err != nil {
		return nil, err
	}
	sess := tpm2.HMAC(tpm2.TPMAlgSHA256, 16,
		tpm2.Auth(auth),
		tpm2.Salted(s.handle, s.pub),
		tpm2.AESEncryption(128, tpm2.EncryptOut))
	hrsp, err := tpm2.Hmac{
		Handle:  tpm2.AuthHandle{Handle: h, Name: name, Auth: sess},
		Buffer:  tpm2.TPM2BMaxBuffer{Buffer: data},
		HashAlg: tpm2.TPMAlgSHA256,
	}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("vault: TPM HMAC: %w", err)
	}
	if len(hrsp.OutHMAC.Buffer) != 32 {
		return nil, fmt.Errorf("vault: TPM HMAC returned %d bytes, want 32", len(hrsp.OutHMAC.Buffer))
	}
	return hrsp.OutHMAC.Buffer, nil
}

// maxHMACInput is the TPM's MAX_DIGEST_BUFFER, the least a TPM 2.0 accepts
// in TPM2_HMAC; callers hash longer data first.
const maxHMACInput = 1024

// checkHMACInput refuses data longer than maxHMACInput before it reaches
// the TPM (which would answer TPM_RC_SIZE, or a bigger TPM would accept
// what a smaller one refuses): every caller hashes first.
func checkHMACInput(data []byte) error {
	if len(data) > maxHMACInput {
		return fmt.Errorf("vault: TPM HMAC input of %d bytes, at most %d (hash it first)", len(data), maxHMACInput)
	}
	return nil
}

// entryKeyAttributes are those of an entry key ([EntryVersion] 2): like the
// vault key's, but without NoDA. Its authValue derives from the vPIN, so
// every vPIN tried is an authorization of a DA-protected object: a wrong one
// counts in the TPM's lockout counter, and in lockout the TPM refuses the
// key even with the right vPIN.
var entryKeyAttributes = tpm2.TPMAObject{
	FixedTPM:            true,
	FixedParent:         true,
	SensitiveDataOrigin: true,
	UserWithAuth:        true,
	SignEncrypt:         true,
}

// entryKeyTemplate is an entry key: an HMAC-SHA256 keyed-hash object.
var entryKeyTemplate = func() tpm2.TPMTPublic {
	t := keyTemplate
	t.ObjectAttributes = entryKeyAttributes
	return t
}()

// checkEntryKeyPublic verifies that pub is an entry key this package would
// have created, DA-protected.
func checkEntryKeyPublic(pub *tpm2.TPMTPublic) error {
	return checkPublic(pub, entryKeyAttributes)
}

// createEntryKey creates an entry key under s whose authValue is auth. The
// TPM generates the key; auth travels in TPM2_Create's first parameter,
// which a salted session encrypts (AES-128-CFB), so auth never crosses the
// bus in clear either. Nothing stays loaded.
func createEntryKey(tpm transport.TPM, s *srk, auth []byte) (tpm2.TPM2BPublic, tpm2.TPM2BPrivate, error) {
	sess := tpm2.HMAC(tpm2.TPMAlgSHA256, 16,
		tpm2.Salted(s.handle, s.pub),
		tpm2.AESEncryption(128, tpm2.EncryptIn))
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: s.handle, Name: s.name, Auth: sess},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			UserAuth: tpm2.TPM2BAuth{Buffer: auth},
		}},
		InPublic: tpm2.New2B(entryKeyTemplate),
	}.Execute(tpm)
	if err != nil {
		return tpm2.TPM2BPublic{}, tpm2.TPM2BPrivate{}, fmt.Errorf("vault: TPM Create (entry key): %w", err)
	}
	return rsp.OutPublic, rsp.OutPrivate, nil
}
