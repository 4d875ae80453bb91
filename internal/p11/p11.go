// Package p11 declares the PKCS #11 v2.40 constants pscs uses, once, for
// the server (which builds each remote card's catalogue of objects and
// mechanisms) and the PKCS #11 module (which serves them to applications).
// Names follow the standard's (CKA_KEY_TYPE is CKAKeyType); values are
// those of pkcs11t.h (PKCS #11 Cryptographic Token Interface Base
// Specification v2.40, section 3 for types and 4 for objects; Current
// Mechanisms v2.40 for CKM_*).
//
// The package is pure Go (no cgo), so that the server does not depend on
// the module's C headers.
package p11

const (
	// Object classes (CKO_*).
	CKOData       = 0
	CKOCert       = 1
	CKOPublicKey  = 2
	CKOPrivateKey = 3

	// Key types (CKK_*).
	CKKRSA = 0
	CKKEC  = 3

	// Attributes (CKA_*).
	CKAClass             = 0x000
	CKAToken             = 0x001
	CKAPrivate           = 0x002
	CKALabel             = 0x003
	CKAApplication       = 0x010
	CKAValue             = 0x011
	CKAObjectID          = 0x012
	CKACertificateType   = 0x080
	CKAIssuer            = 0x081
	CKASerialNumber      = 0x082
	CKATrusted           = 0x086
	CKACertCategory      = 0x087
	CKAJavaMIDP          = 0x088
	CKAURL               = 0x089
	CKAHashOfSubjectPub  = 0x08A
	CKAHashOfIssuerPub   = 0x08B
	CKANameHashAlg       = 0x08C
	CKACheckValue        = 0x090
	CKAKeyType           = 0x100
	CKASubject           = 0x101
	CKAID                = 0x102
	CKASensitive         = 0x103
	CKAEncrypt           = 0x104
	CKADecrypt           = 0x105
	CKAWrap              = 0x106
	CKAUnwrap            = 0x107
	CKASign              = 0x108
	CKASignRecover       = 0x109
	CKAVerify            = 0x10A
	CKAVerifyRecover     = 0x10B
	CKADerive            = 0x10C
	CKAStartDate         = 0x110
	CKAEndDate           = 0x111
	CKAModulus           = 0x120
	CKAModulusBits       = 0x121
	CKAPublicExponent    = 0x122
	CKAPrivateExponent   = 0x123
	CKAPrime1            = 0x124
	CKAPrime2            = 0x125
	CKAExponent1         = 0x126
	CKAExponent2         = 0x127
	CKACoefficient       = 0x128
	CKAPublicKeyInfo     = 0x129
	CKAExtractable       = 0x162
	CKALocal             = 0x163
	CKANeverExtractable  = 0x164
	CKAAlwaysSensitive   = 0x165
	CKAKeyGenMechanism   = 0x166
	CKAModifiable        = 0x170
	CKACopyable          = 0x171
	CKADestroyable       = 0x172
	CKAECParams          = 0x180
	CKAECPoint           = 0x181
	CKAAlwaysAuth        = 0x202
	CKAWrapWithTrusted   = 0x210
	CKAAllowedMechanisms = 0x40000600

	// Mechanisms (CKM_*).
	CKMRSAPKCS          = 0x0001
	CKMSHA1RSAPKCS      = 0x0006
	CKMRSAPKCSPSS       = 0x000D
	CKMSHA256RSAPKCS    = 0x0040
	CKMSHA384RSAPKCS    = 0x0041
	CKMSHA512RSAPKCS    = 0x0042
	CKMSHA256RSAPKCSPSS = 0x0043
	CKMSHA384RSAPKCSPSS = 0x0044
	CKMSHA512RSAPKCSPSS = 0x0045
	CKMSHA224RSAPKCS    = 0x0046
	CKMSHA1             = 0x0220
	CKMSHA256           = 0x0250
	CKMSHA224           = 0x0255
	CKMSHA384           = 0x0260
	CKMSHA512           = 0x0270
	CKMECDSA            = 0x1041
	CKMECDSASHA1        = 0x1042
	CKMECDSASHA224      = 0x1043
	CKMECDSASHA256      = 0x1044
	CKMECDSASHA384      = 0x1045
	CKMECDSASHA512      = 0x1046

	// MGF1 functions (CKG_*).
	CKGMGF1SHA1   = 1
	CKGMGF1SHA256 = 2
	CKGMGF1SHA384 = 3
	CKGMGF1SHA512 = 4
	CKGMGF1SHA224 = 5

	// Flags (CKF_*).
	CKFTokenPresent       = 0x0001 // slot
	CKFRemovableDevice    = 0x0002 // slot
	CKFHWSlot             = 0x0004 // slot
	CKFRNG                = 0x0001 // token
	CKFLoginRequired      = 0x0004 // token
	CKFUserPINInitialized = 0x0008 // token
	CKFTokenInitialized   = 0x0400 // token
	CKFUserPINLocked      = 0x40000
	CKFUserPINCountLow    = 0x10000 // token
	CKFUserPINFinalTry    = 0x20000 // token
	CKFRWSession          = 0x0002  // session
	CKFSerialSession      = 0x0004  // session
	CKFHW                 = 0x0001  // mechanism
	CKFDigest             = 0x0400  // mechanism
	CKFSign               = 0x0800  // mechanism
	CKFECFp               = 0x100000
	CKFECNamedCurve       = 0x800000
	CKFECUncompress       = 0x1000000

	// Session states (CKS_*).
	CKSROPublic = 0
	CKSROUser   = 1
	CKSRWPublic = 2
	CKSRWUser   = 3

	// User types (CKU_*).
	CKUSO              = 0
	CKUUser            = 1
	CKUContextSpecific = 2

	// Certificate types (CKC_*).
	CKCX509 = 0

	// Token flags the server sets in a remote card's token information.
	CKFProtectedAuthPath = 0x0100 // token
)

// Decryption and key agreement (client/pkcs11 C_Decrypt, C_DeriveKey;
// the server's catalogue).
const (
	CKOSecretKey     = 4      // object class of a derived key
	CKKGenericSecret = 0x10   // key type of an ECDH derivation's result
	CKAValueLen      = 0x161  // attribute
	CKMRSAPKCSOAEP   = 0x0009 // mechanism
	CKMECDH1Derive   = 0x1050 // mechanism
	CKDNull          = 1      // key derivation function of CKM_ECDH1_DERIVE: none
	CKZDataSpecified = 1      // source of the OAEP label
	CKFDecrypt       = 0x0200 // mechanism flag
	CKFDerive        = 0x80000
)

// EdDSA and X25519 (PKCS #11 3.0 Base Specification, CKK_EC_EDWARDS and
// CKK_EC_MONTGOMERY; Current Mechanisms 3.0, the sections on Edwards and
// Montgomery curves: CKM_EDDSA and CK_EDDSA_PARAMS). The module still
// announces version 2.40 (C_GetInfo): these values are what 3.0
// consumers (OpenSC's pkcs11-tool, OpenSSL's pkcs11 providers) send to any
// module.
const (
	CKKECEdwards              = 0x40   // key type of Ed25519 (and Ed448) keys
	CKKECMontgomery           = 0x41   // key type of X25519 (and X448) keys
	CKMECEdwardsKeyPairGen    = 0x1055 // mechanism (key generation; pscs generates no keys)
	CKMECMontgomeryKeyPairGen = 0x1056 // mechanism (key generation; pscs generates no keys)
	CKMEDDSA                  = 0x1057 // mechanism: EdDSA over the whole message (CK_EDDSA_PARAMS optional)
	Ed25519Bits               = 255    // CK_MECHANISM_INFO key size of Ed25519 and X25519: the field's bits, as PKCS #11 3.0 says for CKM_EDDSA
	Ed25519PublicKeySize      = 32     // bytes of an Ed25519 public key and of an X25519 u-coordinate
	Ed25519SignatureSize      = 64     // bytes of an Ed25519 signature (RFC 8032, 5.1.6)
	CurveNameEdwards25519     = "edwards25519"
	CurveNameCurve25519       = "curve25519"
)

// ECParamsEd25519 and ECParamsX25519 are CKA_EC_PARAMS of Ed25519 and
// X25519 keys: the DER of the curves' OIDs of RFC 8410 (id-Ed25519
// 1.3.101.112, id-X25519 1.3.101.110), the form an X.509
// SubjectPublicKeyInfo of the same key names them with. PKCS #11 3.0 also
// allows a DER PrintableString ("edwards25519", "curve25519"); pscs
// serves the OID form and the module reads both.
var (
	ECParamsEd25519 = []byte{0x06, 0x03, 0x2B, 0x65, 0x70}
	ECParamsX25519  = []byte{0x06, 0x03, 0x2B, 0x65, 0x6E}
)
