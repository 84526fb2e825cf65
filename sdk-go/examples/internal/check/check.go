// Package check is the tiny check helper shared by the examples: it prints [ok]/[FAILED] per
// check and exits non-zero at the end when any check failed.
package check

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

var failures []string

// That records one check.
func That(ok bool, what string) {
	mark := "ok"
	if !ok {
		mark = "FAILED"
		failures = append(failures, what)
	}
	fmt.Printf("  [%s] %s\n", mark, what)
}

// Finish exits with status 1 when a check failed, else prints "name: all checks passed".
func Finish(name string) {
	if len(failures) > 0 {
		fmt.Fprintf(os.Stderr, "%d check(s) failed: %s\n", len(failures), strings.Join(failures, "; "))
		os.Exit(1)
	}
	fmt.Printf("%s: all checks passed\n", name)
}

// Fatal prints err and exits with status 1.
func Fatal(err error) {
	fmt.Fprintln(os.Stderr, "example failed:", err)
	os.Exit(1)
}

// UniqueSuffix is a short unique suffix so repeated runs against one server do not collide.
func UniqueSuffix() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return strconv.FormatInt(time.Now().UnixMilli(), 36) + hex.EncodeToString(b[:])
}
