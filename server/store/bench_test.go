package store

import (
	"fmt"
	"testing"
)

func BenchmarkPut(b *testing.B) {
	s, err := Open(tempStoreB(b), testMAC)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	v := make([]byte, 200)
	i := 0
	for b.Loop() {
		if err := s.Put(KindVault, fmt.Sprintf("d%05d", i%10000), v); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func store10k(b *testing.B) string {
	path := tempStoreB(b)
	s, err := Open(path, testMAC)
	if err != nil {
		b.Fatal(err)
	}
	v := make([]byte, 200)
	for i := range 10000 {
		if err := s.Put(KindVault, fmt.Sprintf("d%05d", i), v); err != nil {
			b.Fatal(err)
		}
	}
	s.Close()
	return path
}

func BenchmarkGet10k(b *testing.B) {
	s, err := Open(store10k(b), testMAC)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	i := 0
	for b.Loop() {
		if _, err := s.Get(KindVault, fmt.Sprintf("d%05d", i%10000)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkOpen10k(b *testing.B) {
	path := store10k(b)
	for b.Loop() {
		s, err := Open(path, testMAC)
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}

func tempStoreB(b *testing.B) string { return b.TempDir() + "/pscs.store" }
