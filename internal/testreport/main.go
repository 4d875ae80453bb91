// Command testreport reads `go test -json` on standard input and prints a
// readable report: one line per test and package, the whole output of every
// test that failed, and a closing "N passed, N failed, N skipped" line. It
// exits 1 if anything failed, so `go test -json ./... | testreport` can
// stand for `go test ./...` in CI, which then shows every test by name.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

type event struct {
	Action     string
	ImportPath string // of build-output and build-fail events
	Package    string
	Test       string
	Elapsed    float64
	Output     string
}

func main() {
	os.Exit(run())
}

func run() int {
	outputs := map[string]*strings.Builder{} // package/test -> output
	var passed, failed, skipped int
	var failedNames []string
	pkgFailed := false
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil || e.Action == "" {
			// Build errors and other non-JSON lines: show them as they are.
			fmt.Println(string(line))
			continue
		}
		key := e.Package + "/" + e.Test
		switch e.Action {
		case "build-output":
			fmt.Print(e.Output) // compiler errors
		case "build-fail":
			pkgFailed = true
			fmt.Printf("FAIL\t%s [build failed]\n", e.ImportPath)
		case "output":
			b := outputs[key]
			if b == nil {
				b = &strings.Builder{}
				outputs[key] = b
			}
			b.WriteString(e.Output)
		case "pass", "fail", "skip":
			depth := strings.Count(e.Test, "/")
			indent := strings.Repeat("    ", depth)
			if e.Test == "" {
				// The package's own result.
				if e.Action == "skip" {
					fmt.Printf("?   \t%s\t[no test files]\n", e.Package)
					continue
				}
				if e.Action == "fail" {
					pkgFailed = true
					if b := outputs[key]; b != nil {
						fmt.Print(b.String())
					}
					fmt.Printf("FAIL\t%s\t%.3fs\n", e.Package, e.Elapsed)
				} else {
					fmt.Printf("ok  \t%s\t%.3fs\n", e.Package, e.Elapsed)
				}
				continue
			}
			word := map[string]string{"pass": "PASS", "fail": "FAIL", "skip": "SKIP"}[e.Action]
			fmt.Printf("%s--- %s: %s (%.2fs)\n", indent, word, e.Test, e.Elapsed)
			switch e.Action {
			case "pass":
				passed++
			case "fail":
				failed++
				failedNames = append(failedNames, e.Package+" "+e.Test)
				if b := outputs[key]; b != nil {
					fmt.Print(b.String())
				}
			case "skip":
				skipped++
				if b := outputs[key]; b != nil {
					fmt.Print(indent + "    " + strings.TrimSpace(lastLines(b.String(), 2)) + "\n")
				}
			}
			delete(outputs, key)
		}
	}
	if len(failedNames) > 0 {
		fmt.Println("\nfailed:")
		for _, n := range failedNames {
			fmt.Println("  " + n)
		}
	}
	fmt.Printf("\n%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	if failed > 0 || pkgFailed {
		return 1
	}
	return 0
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
