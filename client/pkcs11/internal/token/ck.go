package token

// PKCS #11 v2.40 constants the module uses, named as in the standard
// (PKCS #11 Cryptographic Token Interface Base Specification v2.40, section
// 3 for types and 4 for objects; Current Mechanisms v2.40 for CKM_*).
const (
	// Object classes (CKO_*).
	ckoData       = 0
	ckoCert       = 1
	ckoPublicKey  = 2
	ckoPrivateKey = 3

	// Key types (CKK_*).
	ckkRSA = 0
	ckkEC  = 3

	// Attributes (CKA_*).
	ckaClass             = 0x000
	ckaToken             = 0x001
	ckaPrivate           = 0x002
	ckaLabel             = 0x003
	ckaApplication       = 0x010
	ckaValue             = 0x011
	ckaObjectID          = 0x012
	ckaCertificateType   = 0x080
	ckaIssuer            = 0x081
	ckaSerialNumber      = 0x082
	ckaTrusted           = 0x086
	ckaCertCategory      = 0x087
	ckaJavaMIDP          = 0x088
	ckaURL               = 0x089
	ckaHashOfSubjectPub  = 0x08A
	ckaHashOfIssuerPub   = 0x08B
	ckaNameHashAlg       = 0x08C
	ckaCheckValue        = 0x090
	ckaKeyType           = 0x100
	ckaSubject           = 0x101
	ckaID                = 0x102
	ckaSensitive         = 0x103
	ckaEncrypt           = 0x104
	ckaDecrypt           = 0x105
	ckaWrap              = 0x106
	ckaUnwrap            = 0x107
	ckaSign              = 0x108
	ckaSignRecover       = 0x109
	ckaVerify            = 0x10A
	ckaVerifyRecover     = 0x10B
	ckaDerive            = 0x10C
	ckaStartDate         = 0x110
	ckaEndDate           = 0x111
	ckaModulus           = 0x120
	ckaModulusBits       = 0x121
	ckaPublicExponent    = 0x122
	ckaPrivateExponent   = 0x123
	ckaPrime1            = 0x124
	ckaPrime2            = 0x125
	ckaExponent1         = 0x126
	ckaExponent2         = 0x127
	ckaCoefficient       = 0x128
	ckaPublicKeyInfo     = 0x129
	ckaExtractable       = 0x162
	ckaLocal             = 0x163
	ckaNeverExtractable  = 0x164
	ckaAlwaysSensitive   = 0x165
	ckaKeyGenMechanism   = 0x166
	ckaModifiable        = 0x170
	ckaCopyable          = 0x171
	ckaDestroyable       = 0x172
	ckaECParams          = 0x180
	ckaECPoint           = 0x181
	ckaAlwaysAuth        = 0x202
	ckaWrapWithTrusted   = 0x210
	ckaAllowedMechanisms = 0x40000600

	// Mechanisms (CKM_*).
	ckmRSAPKCS          = 0x0001
	ckmSHA1RSAPKCS      = 0x0006
	ckmRSAPKCSPSS       = 0x000D
	ckmSHA256RSAPKCS    = 0x0040
	ckmSHA384RSAPKCS    = 0x0041
	ckmSHA512RSAPKCS    = 0x0042
	ckmSHA256RSAPKCSPSS = 0x0043
	ckmSHA384RSAPKCSPSS = 0x0044
	ckmSHA512RSAPKCSPSS = 0x0045
	ckmSHA224RSAPKCS    = 0x0046
	ckmSHA1             = 0x0220
	ckmSHA256           = 0x0250
	ckmSHA224           = 0x0255
	ckmSHA384           = 0x0260
	ckmSHA512           = 0x0270
	ckmECDSA            = 0x1041
	ckmECDSASHA1        = 0x1042
	ckmECDSASHA224      = 0x1043
	ckmECDSASHA256      = 0x1044
	ckmECDSASHA384      = 0x1045
	ckmECDSASHA512      = 0x1046

	// MGF1 functions (CKG_*).
	ckgMGF1SHA1   = 1
	ckgMGF1SHA256 = 2
	ckgMGF1SHA384 = 3
	ckgMGF1SHA512 = 4
	ckgMGF1SHA224 = 5

	// Flags (CKF_*).
	ckfTokenPresent       = 0x0001 // slot
	ckfRemovableDevice    = 0x0002 // slot
	ckfHWSlot             = 0x0004 // slot
	ckfRNG                = 0x0001 // token
	ckfLoginRequired      = 0x0004 // token
	ckfUserPINInitialized = 0x0008 // token
	ckfTokenInitialized   = 0x0400 // token
	ckfUserPINLocked      = 0x40000
	ckfRWSession          = 0x0002 // session
	ckfSerialSession      = 0x0004 // session
	ckfHW                 = 0x0001 // mechanism
	ckfDigest             = 0x0400 // mechanism
	ckfSign               = 0x0800 // mechanism
	ckfECFp               = 0x100000
	ckfECNamedCurve       = 0x800000
	ckfECUncompress       = 0x1000000

	// Session states (CKS_*).
	cksROPublic = 0
	cksROUser   = 1
	cksRWPublic = 2
	cksRWUser   = 3

	// User types (CKU_*).
	ckuSO              = 0
	ckuUser            = 1
	ckuContextSpecific = 2
)

// Unavailable is CK_UNAVAILABLE_INFORMATION: ~0 as a CK_ULONG.
const Unavailable = ^uint64(0)

// Flags of C_Initialize's CK_C_INITIALIZE_ARGS and of C_WaitForSlotEvent.
const (
	FlagLibraryCantCreateOSThreads = 0x1 // CKF_LIBRARY_CANT_CREATE_OS_THREADS
	FlagOSLockingOK                = 0x2 // CKF_OS_LOCKING_OK
	FlagDontBlock                  = 0x1 // CKF_DONT_BLOCK
)
