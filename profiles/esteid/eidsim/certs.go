package eidsim

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"fmt"
	"io"
	"math/big"
	"time"

	"github.com/pscs/pscs/profiles/simkit"
)

// Person is the card holder, as the personal data file and the
// certificates name them. The simulator's people are made up.
type Person struct {
	Surname, GivenName string // upper case, as on the card
	// PersonalCode is the Estonian personal identification code
	// (isikukood): 11 digits, GYYMMDDSSSC.
	PersonalCode string
	// DocumentNumber is the card's document number, two letters and
	// seven digits.
	DocumentNumber string
}

var (
	surnames = []string{"MÄNNIK", "KASK", "PÄRN", "SAAR", "ILVES", "LEPIK", "KUUSK", "RÄTSEP"}
	// given names by sex: male, female
	givenNames = [2][]string{{"JAAN", "PEETER", "TÕNU", "MART"}, {"MARI-LIIS", "KÜLLI", "ÕIE", "ANU"}}
)

// seededPerson makes up a card holder from seed.
func seededPerson(seed []byte) Person {
	var b [16]byte
	io.ReadFull(simkit.SeedReader(seed, "person"), b[:])
	u := binary.BigEndian.Uint64(b[:8])
	v := binary.BigEndian.Uint64(b[8:])
	female := u & 1
	g := byte('3') + byte(female)
	yy, mm, dd := 60+u>>8%40, 1+u>>16%12, 1+u>>24%28
	code := fmt.Sprintf("%c%02d%02d%02d%03d", g, yy, mm, dd, u>>32%1000)
	return Person{
		Surname:        surnames[v%uint64(len(surnames))],
		GivenName:      givenNames[female][(v>>8)%uint64(len(givenNames[female]))],
		PersonalCode:   code + string(rune('0'+codeCheckDigit(code))),
		DocumentNumber: fmt.Sprintf("AC%07d", v>>16%10000000),
	}
}

// codeCheckDigit is the check digit of the first ten digits of an Estonian
// personal code (weights 1-9,1; if that gives 10, 3-9,1-3; if 10 again, 0).
func codeCheckDigit(ten string) int {
	sum := func(w []int) int {
		s := 0
		for i, c := range ten[:10] {
			s += int(c-'0') * w[i]
		}
		return s % 11
	}
	if d := sum([]int{1, 2, 3, 4, 5, 6, 7, 8, 9, 1}); d < 10 {
		return d
	}
	if d := sum([]int{3, 4, 5, 6, 7, 8, 9, 1, 2, 3}); d < 10 {
		return d
	}
	return 0
}

// birthDate reads the date of birth out of a personal code.
func (p Person) birthDate() (time.Time, bool) {
	if len(p.PersonalCode) != 11 {
		return time.Time{}, false
	}
	century := map[byte]int{'1': 1800, '2': 1800, '3': 1900, '4': 1900, '5': 2000, '6': 2000}[p.PersonalCode[0]]
	var yy, mm, dd int
	if _, err := fmt.Sscanf(p.PersonalCode[1:7], "%02d%02d%02d", &yy, &mm, &dd); err != nil || century == 0 {
		return time.Time{}, false
	}
	return time.Date(century+yy, time.Month(mm), dd, 0, 0, 0, 0, time.UTC), true
}

// Attribute types of the subject names, as EstEID certificates use them.
var (
	oidCountry      = asn1.ObjectIdentifier{2, 5, 4, 6}
	oidCommonName   = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidSurname      = asn1.ObjectIdentifier{2, 5, 4, 4}
	oidGivenName    = asn1.ObjectIdentifier{2, 5, 4, 42}
	oidSerialNumber = asn1.ObjectIdentifier{2, 5, 4, 5}
	oidOrganization = asn1.ObjectIdentifier{2, 5, 4, 10}
	oidOrgID        = asn1.ObjectIdentifier{2, 5, 4, 97}
)

// subject is the certificate subject of an EstEID 2018 card holder, in the
// order real certificates have it: C, CN "SURNAME,GIVEN,CODE", SN, GN,
// serialNumber "PNOEE-CODE".
func (p Person) subject() pkix.Name {
	return pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{
		{Type: oidCountry, Value: "EE"},
		{Type: oidCommonName, Value: p.Surname + "," + p.GivenName + "," + p.PersonalCode},
		{Type: oidSurname, Value: p.Surname},
		{Type: oidGivenName, Value: p.GivenName},
		{Type: oidSerialNumber, Value: "PNOEE-" + p.PersonalCode},
	}}
}

// caSubject names the simulator's test CA; "TEST of" marks it, as the
// issuer's own test CAs are marked.
var caSubject = pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{
	{Type: oidCountry, Value: "EE"},
	{Type: oidOrganization, Value: "pscs simulated CA"},
	{Type: oidOrgID, Value: "NTREE-00000000"},
	{Type: oidCommonName, Value: "TEST of pscs ESTEID2018"},
}}

// Certificate policies of EstEID 2018 certificates: the issuer's
// authentication and qualified-signature policies and the ETSI
// policies they follow (EN 319 411-2: QCP-n-qscd; EN 319 411-1: NCP+).
var (
	policyAuth = []asn1.ObjectIdentifier{{1, 3, 6, 1, 4, 1, 51361, 1, 1, 3}, {0, 4, 0, 2042, 1, 2}}
	policySign = []asn1.ObjectIdentifier{{1, 3, 6, 1, 4, 1, 51361, 1, 1, 1}, {0, 4, 0, 194112, 1, 2}}
)

// rfc6979 signs deterministically (RFC 6979), whatever random source it
// is given, so that a seeded card has the same certificates on every run.
type rfc6979 struct{ *ecdsa.PrivateKey }

func (k rfc6979) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return k.PrivateKey.Sign(nil, digest, opts)
}

// pki is the test CA and the two certificates it issued to the card.
type pki struct {
	ca, auth, sign *x509.Certificate
}

// issue makes the test CA from seed and certifies the two card keys.
func issue(seed []byte, p Person, authKey, signKey *ecdsa.PrivateKey, notBefore time.Time) (*pki, error) {
	k, err := simkit.GenerateKey(simkit.ECCP384, seed, "test CA")
	if err != nil {
		return nil, err
	}
	caKey := k.(*ecdsa.PrivateKey)
	serial := func(label string) *big.Int {
		var b [16]byte
		io.ReadFull(simkit.SeedReader(seed, label), b[:])
		b[0] &= 0x7F
		return new(big.Int).SetBytes(b[:])
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial("CA serial"),
		Subject:               caSubject,
		NotBefore:             notBefore.AddDate(-1, 0, 0),
		NotAfter:              notBefore.AddDate(15, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(nil, caTmpl, caTmpl, caKey.Public(), rfc6979{caKey})
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	leaf := func(label string, key *ecdsa.PrivateKey, usage x509.KeyUsage, ext []x509.ExtKeyUsage, policies []asn1.ObjectIdentifier) (*x509.Certificate, error) {
		tmpl := &x509.Certificate{
			SerialNumber: serial(label),
			Subject:      p.subject(),
			NotBefore:    notBefore,
			NotAfter:     notBefore.AddDate(5, 0, 0).Add(-time.Second),
			KeyUsage:     usage,
			ExtKeyUsage:  ext,
		}
		for _, oid := range policies {
			o, err := x509.OIDFromInts(toUint64(oid))
			if err != nil {
				return nil, err
			}
			tmpl.Policies = append(tmpl.Policies, o)
		}
		der, err := x509.CreateCertificate(nil, tmpl, ca, key.Public(), rfc6979{caKey})
		if err != nil {
			return nil, err
		}
		return x509.ParseCertificate(der)
	}
	out := &pki{ca: ca}
	if out.auth, err = leaf("auth serial", authKey, x509.KeyUsageDigitalSignature|x509.KeyUsageKeyAgreement,
		[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageEmailProtection}, policyAuth); err != nil {
		return nil, err
	}
	if out.sign, err = leaf("sign serial", signKey, x509.KeyUsageContentCommitment, nil, policySign); err != nil {
		return nil, err
	}
	return out, nil
}

func toUint64(oid asn1.ObjectIdentifier) []uint64 {
	out := make([]uint64, len(oid))
	for i, v := range oid {
		out[i] = uint64(v)
	}
	return out
}
