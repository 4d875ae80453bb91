package token

import "github.com/pscs/pscs/internal/p11"

// PKCS #11 v2.40 constants the module uses: those of internal/p11, the
// one declaration the server shares, under the module's names.
const (
	// Object classes (CKO_*).
	ckoData       = p11.CKOData
	ckoCert       = p11.CKOCert
	ckoPublicKey  = p11.CKOPublicKey
	ckoPrivateKey = p11.CKOPrivateKey
	ckoSecretKey  = p11.CKOSecretKey

	// Key types (CKK_*).
	ckkRSA           = p11.CKKRSA
	ckkEC            = p11.CKKEC
	ckkGenericSecret = p11.CKKGenericSecret
	ckkECEdwards     = p11.CKKECEdwards
	ckkECMontgomery  = p11.CKKECMontgomery

	// Attributes (CKA_*).
	ckaClass             = p11.CKAClass
	ckaToken             = p11.CKAToken
	ckaPrivate           = p11.CKAPrivate
	ckaLabel             = p11.CKALabel
	ckaApplication       = p11.CKAApplication
	ckaValue             = p11.CKAValue
	ckaObjectID          = p11.CKAObjectID
	ckaCertificateType   = p11.CKACertificateType
	ckaIssuer            = p11.CKAIssuer
	ckaSerialNumber      = p11.CKASerialNumber
	ckaTrusted           = p11.CKATrusted
	ckaCertCategory      = p11.CKACertCategory
	ckaJavaMIDP          = p11.CKAJavaMIDP
	ckaURL               = p11.CKAURL
	ckaHashOfSubjectPub  = p11.CKAHashOfSubjectPub
	ckaHashOfIssuerPub   = p11.CKAHashOfIssuerPub
	ckaNameHashAlg       = p11.CKANameHashAlg
	ckaCheckValue        = p11.CKACheckValue
	ckaKeyType           = p11.CKAKeyType
	ckaSubject           = p11.CKASubject
	ckaID                = p11.CKAID
	ckaSensitive         = p11.CKASensitive
	ckaEncrypt           = p11.CKAEncrypt
	ckaDecrypt           = p11.CKADecrypt
	ckaWrap              = p11.CKAWrap
	ckaUnwrap            = p11.CKAUnwrap
	ckaSign              = p11.CKASign
	ckaSignRecover       = p11.CKASignRecover
	ckaVerify            = p11.CKAVerify
	ckaVerifyRecover     = p11.CKAVerifyRecover
	ckaDerive            = p11.CKADerive
	ckaValueLen          = p11.CKAValueLen
	ckaStartDate         = p11.CKAStartDate
	ckaEndDate           = p11.CKAEndDate
	ckaModulus           = p11.CKAModulus
	ckaModulusBits       = p11.CKAModulusBits
	ckaPublicExponent    = p11.CKAPublicExponent
	ckaPrivateExponent   = p11.CKAPrivateExponent
	ckaPrime1            = p11.CKAPrime1
	ckaPrime2            = p11.CKAPrime2
	ckaExponent1         = p11.CKAExponent1
	ckaExponent2         = p11.CKAExponent2
	ckaCoefficient       = p11.CKACoefficient
	ckaPublicKeyInfo     = p11.CKAPublicKeyInfo
	ckaExtractable       = p11.CKAExtractable
	ckaLocal             = p11.CKALocal
	ckaNeverExtractable  = p11.CKANeverExtractable
	ckaAlwaysSensitive   = p11.CKAAlwaysSensitive
	ckaKeyGenMechanism   = p11.CKAKeyGenMechanism
	ckaModifiable        = p11.CKAModifiable
	ckaCopyable          = p11.CKACopyable
	ckaDestroyable       = p11.CKADestroyable
	ckaECParams          = p11.CKAECParams
	ckaECPoint           = p11.CKAECPoint
	ckaAlwaysAuth        = p11.CKAAlwaysAuth
	ckaWrapWithTrusted   = p11.CKAWrapWithTrusted
	ckaAllowedMechanisms = p11.CKAAllowedMechanisms

	// Mechanisms (CKM_*).
	ckmRSAPKCS          = p11.CKMRSAPKCS
	ckmSHA1RSAPKCS      = p11.CKMSHA1RSAPKCS
	ckmRSAPKCSPSS       = p11.CKMRSAPKCSPSS
	ckmSHA256RSAPKCS    = p11.CKMSHA256RSAPKCS
	ckmSHA384RSAPKCS    = p11.CKMSHA384RSAPKCS
	ckmSHA512RSAPKCS    = p11.CKMSHA512RSAPKCS
	ckmSHA256RSAPKCSPSS = p11.CKMSHA256RSAPKCSPSS
	ckmSHA384RSAPKCSPSS = p11.CKMSHA384RSAPKCSPSS
	ckmSHA512RSAPKCSPSS = p11.CKMSHA512RSAPKCSPSS
	ckmSHA224RSAPKCS    = p11.CKMSHA224RSAPKCS
	ckmSHA1             = p11.CKMSHA1
	ckmSHA256           = p11.CKMSHA256
	ckmSHA224           = p11.CKMSHA224
	ckmSHA384           = p11.CKMSHA384
	ckmSHA512           = p11.CKMSHA512
	ckmECDSA            = p11.CKMECDSA
	ckmECDSASHA1        = p11.CKMECDSASHA1
	ckmECDSASHA224      = p11.CKMECDSASHA224
	ckmECDSASHA256      = p11.CKMECDSASHA256
	ckmECDSASHA384      = p11.CKMECDSASHA384
	ckmECDSASHA512      = p11.CKMECDSASHA512
	ckmRSAPKCSOAEP      = p11.CKMRSAPKCSOAEP
	ckmECDH1Derive      = p11.CKMECDH1Derive
	ckmEDDSA            = p11.CKMEDDSA
	ckdNull             = p11.CKDNull
	ckzDataSpecified    = p11.CKZDataSpecified

	// MGF1 functions (CKG_*).
	ckgMGF1SHA1   = p11.CKGMGF1SHA1
	ckgMGF1SHA256 = p11.CKGMGF1SHA256
	ckgMGF1SHA384 = p11.CKGMGF1SHA384
	ckgMGF1SHA512 = p11.CKGMGF1SHA512
	ckgMGF1SHA224 = p11.CKGMGF1SHA224

	// Flags (CKF_*).
	ckfTokenPresent       = p11.CKFTokenPresent
	ckfRemovableDevice    = p11.CKFRemovableDevice
	ckfHWSlot             = p11.CKFHWSlot
	ckfRNG                = p11.CKFRNG
	ckfLoginRequired      = p11.CKFLoginRequired
	ckfUserPINInitialized = p11.CKFUserPINInitialized
	ckfTokenInitialized   = p11.CKFTokenInitialized
	ckfUserPINLocked      = p11.CKFUserPINLocked
	ckfRWSession          = p11.CKFRWSession
	ckfSerialSession      = p11.CKFSerialSession
	ckfHW                 = p11.CKFHW
	ckfDigest             = p11.CKFDigest
	ckfSign               = p11.CKFSign
	ckfDecrypt            = p11.CKFDecrypt
	ckfDerive             = p11.CKFDerive
	ckfECFp               = p11.CKFECFp
	ckfECNamedCurve       = p11.CKFECNamedCurve
	ckfECUncompress       = p11.CKFECUncompress

	// Session states (CKS_*).
	cksROPublic = p11.CKSROPublic
	cksROUser   = p11.CKSROUser
	cksRWPublic = p11.CKSRWPublic
	cksRWUser   = p11.CKSRWUser

	// User types (CKU_*).
	ckuSO              = p11.CKUSO
	ckuUser            = p11.CKUUser
	ckuContextSpecific = p11.CKUContextSpecific
)

// Unavailable is CK_UNAVAILABLE_INFORMATION: ~0 as a CK_ULONG.
const Unavailable = ^uint64(0)

// Flags of C_Initialize's CK_C_INITIALIZE_ARGS and of C_WaitForSlotEvent.
const (
	FlagLibraryCantCreateOSThreads = 0x1 // CKF_LIBRARY_CANT_CREATE_OS_THREADS
	FlagOSLockingOK                = 0x2 // CKF_OS_LOCKING_OK
	FlagDontBlock                  = 0x1 // CKF_DONT_BLOCK
)
