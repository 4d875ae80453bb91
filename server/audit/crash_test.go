package audit

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// crashChildEnv, when set to a log path, turns the test binary into the
// child of TestCrashSIGKILL: it appends to that log until it is killed.
const crashChildEnv = "PSCS_AUDIT_CRASH_CHILD"

func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		os.Exit(crashChild(path))
	}
	os.Exit(m.Run())
}

// crashChild appends from several goroutines, with real fsync, and prints
// "seq op" after each Append returns, i.e. once the record is durable.
// Some records are large, so that a kill can land inside a write.
func crashChild(path string) int {
	l, err := Open(path, testKey, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	var out sync.Mutex
	stop := time.After(30 * time.Second) // the parent kills us long before
	for g := 0; g < 8; g++ {
		go func() {
			for i := 0; ; i++ {
				r := testRecord(i)
				r.Op = fmt.Sprintf("child-g%d-i%d", g, i)
				if i%5 == 0 {
					r.Result = bytes.Repeat([]byte{byte(g)}, 256<<10)
				}
				seq, err := l.Append(context.Background(), r)
				if err != nil {
					fmt.Fprintln(os.Stderr, "child:", err)
					os.Exit(3)
				}
				out.Lock()
				fmt.Printf("%d %s\n", seq, r.Op)
				out.Unlock()
			}
		}()
	}
	<-stop
	return 4
}

// TestCrashSIGKILL kills a process that is appending, several times over
// the same log: each time the log must open and verify, and every record
// the child was told is durable must be there.
func TestCrashSIGKILL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	durable := map[uint64]string{} // seq → op, as the children reported
	for round, after := range []int{1, 40, 150, 400} {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		lines := 0
		killed := false
		for sc.Scan() {
			seq, op, ok := strings.Cut(sc.Text(), " ")
			if !ok {
				continue // a line cut short by the kill
			}
			n, err := strconv.ParseUint(seq, 10, 64)
			if err != nil {
				t.Fatalf("child printed %q", sc.Text())
			}
			durable[n] = op
			if lines++; lines == after && !killed {
				cmd.Process.Kill() // SIGKILL
				killed = true
			}
		}
		err = cmd.Wait()
		if !killed {
			t.Fatalf("round %d: child exited by itself: %v\n%s", round, err, stderr.Bytes())
		}

		l, err := Open(path, testKey, Options{NoSync: true})
		if err != nil {
			t.Fatalf("round %d: Open after SIGKILL: %v", round, err)
		}
		head, _ := l.Head()
		t.Logf("round %d: killed after %d acknowledged records; log head %d; recovered %+v", round, lines, head, l.Recovered())
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		found := map[uint64]string{}
		n, err := Verify(f, testKey, func(r *Record) error { found[r.Seq] = r.Op; return nil })
		f.Close()
		if err != nil || uint64(n) != head {
			t.Fatalf("round %d: Verify = %d, %v; want %d, nil", round, n, err, head)
		}
		for seq, op := range durable {
			if found[seq] != op {
				t.Errorf("round %d: acknowledged record %d (%s) is %q in the log", round, seq, op, found[seq])
			}
		}
	}
}
