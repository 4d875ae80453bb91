package profiles

import "encoding/asn1"

var asn1Unmarshal = asn1.Unmarshal
