package store

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const crashChildEnv = "PSCS_STORE_CRASH_CHILD"

func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		crashChild(path)
		return
	}
	os.Exit(m.Run())
}

// crashChild writes forever, printing "ok key seq" after each Put returns.
// Small compaction threshold: the kill also lands inside compactions.
func crashChild(path string) {
	compactMinBytes = 8 << 10
	s, err := Open(path, testMAC)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	for seq := 1; ; seq++ {
		key := fmt.Sprintf("k%03d", seq%97)
		if err := s.Put(KindVault, key, []byte(fmt.Sprintf("%d", seq))); err != nil {
			fmt.Println("put:", err)
			os.Exit(2)
		}
		fmt.Printf("ok %s %d\n", key, seq)
	}
}

func TestCrashSafety(t *testing.T) {
	path := tempStore(t)
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		committed := map[string]int{}
		sc := bufio.NewScanner(out)
		deadline := time.Now().Add(300 * time.Millisecond)
		n := 0
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 3 || f[0] != "ok" {
				t.Fatalf("child: %s", sc.Text())
			}
			committed[f[1]], _ = strconv.Atoi(f[2])
			n++
			if time.Now().After(deadline) && n > 200 {
				break
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		for sc.Scan() { // acknowledged before the kill landed
			if f := strings.Fields(sc.Text()); len(f) == 3 {
				committed[f[1]], _ = strconv.Atoi(f[2])
			}
		}
		cmd.Wait()

		s, err := Open(path, testMAC)
		if err != nil {
			t.Fatalf("round %d: Open after SIGKILL: %v", round, err)
		}
		if _, err := s.Verify(); err != nil {
			t.Fatalf("round %d: Verify after SIGKILL: %v", round, err)
		}
		for key, seq := range committed {
			b, err := s.Get(KindVault, key)
			got, _ := strconv.Atoi(string(b))
			// A later write may have reached the disk without being
			// reported; an earlier one must not be what we find.
			if err != nil || got < seq {
				t.Errorf("round %d: %s = %q, %v; want the committed %d or later", round, key, b, err, seq)
			}
		}
		t.Logf("round %d: %d acknowledged writes, store at version %d, dropped %d torn bytes", round, n, s.Version(), s.Recovered())
		s.Close()
	}
}
