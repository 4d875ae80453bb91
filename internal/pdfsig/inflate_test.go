package pdfsig_test

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/pscs/pscs/internal/pdfsig"
)

// objectStreamPDF returns a one-page PDF (a cross-reference stream) with
// n object streams whose Flate data each inflate to size bytes of white
// space and an object; the first one's object is the catalog's /AcroForm.
func objectStreamPDF(t *testing.T, n, size int) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteString("%PDF-1.7\n")
	offsets := map[int]int{}
	obj := func(num int, body string) {
		offsets[num] = b.Len()
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", num, body)
	}
	obj(1, fmt.Sprintf("<</Type/Catalog/Pages 2 0 R/AcroForm %d 0 R>>", 4+n)) // in the first stream
	obj(2, "<</Type/Pages/Kids[3 0 R]/Count 1>>")
	obj(3, "<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>")
	// Objects 4..3+n are the streams, 4+n..3+2n the objects in them.
	for i := range n {
		var z bytes.Buffer
		w, _ := zlib.NewWriterLevel(&z, zlib.BestCompression)
		inner := fmt.Sprintf("%d %d ", 4+n+i, size)
		w.Write([]byte(inner))
		space := bytes.Repeat([]byte{' '}, 1<<20)
		for left := size; left > 0; left -= len(space) {
			w.Write(space[:min(left, len(space))])
		}
		w.Write([]byte("<</Fields[]>>"))
		w.Close()
		offsets[4+i] = b.Len()
		fmt.Fprintf(&b, "%d 0 obj\n<</Type/ObjStm/N 1/First %d/Filter/FlateDecode/Length %d>>\nstream\n", 4+i, len(inner), z.Len())
		b.Write(z.Bytes())
		b.WriteString("\nendstream\nendobj\n")
	}
	xref := 4 + 2*n
	offsets[xref] = b.Len()
	var data []byte
	for num := range xref + 1 {
		switch {
		case num == 0:
			data = append(data, 0, 0, 0, 0, 0, 0xff, 0xff)
		case num >= 4+n && num < xref:
			data = append(data, 2)
			data = binary.BigEndian.AppendUint32(data, uint32(num-n))
			data = append(data, 0, 0)
		default:
			data = append(data, 1)
			data = binary.BigEndian.AppendUint32(data, uint32(offsets[num]))
			data = append(data, 0, 0)
		}
	}
	fmt.Fprintf(&b, "%d 0 obj\n<</Type/XRef/Size %d/W[1 4 2]/Root 1 0 R/Length %d>>\nstream\n", xref, xref+1, len(data))
	b.Write(data)
	fmt.Fprintf(&b, "\nendstream\nendobj\nstartxref\n%d\n%%%%EOF\n", offsets[xref])
	return b.Bytes()
}

// TestInflateLimit: a file of 33 KB whose object stream inflates to
// MaxDecode + 1 MiB (the form is in it; pdfcpu's own limit is 512 MiB) is
// refused (ErrNotPDF, the decode limit named); one whose stream inflates
// to 1 MiB is signed.
func TestInflateLimit(t *testing.T) {
	for _, tc := range []struct {
		size    int
		refused bool
	}{{1 << 20, false}, {pdfsig.MaxDecode + 1<<20, true}} {
		pdf := objectStreamPDF(t, 1, tc.size)
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		doc, err := pdfsig.Read(bytes.NewReader(pdf))
		if err == nil {
			_, err = doc.Prepare(pdfsig.Options{})
		}
		runtime.ReadMemStats(&m1)
		t.Logf("a stream of %d MiB in %d bytes: %v; %d MiB allocated", tc.size>>20, len(pdf), err, (m1.TotalAlloc-m0.TotalAlloc)>>20)
		if !tc.refused {
			if err != nil {
				t.Fatal(err)
			}
			continue
		}
		if !errors.Is(err, pdfsig.ErrNotPDF) || !strings.Contains(err.Error(), "decode limit") {
			t.Fatalf("a stream of %d MiB: %v, want ErrNotPDF for the decode limit", tc.size>>20, err)
		}
	}
}
