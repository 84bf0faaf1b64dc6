//go:build linux

package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// openPTY returns the two ends of a new pseudo-terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal on this machine: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Skipf("no pseudo-terminal on this machine: unlock: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Skipf("no pseudo-terminal on this machine: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Skipf("no pseudo-terminal on this machine: %v", err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// ttyRun runs the binary with stdout or stderr (or both) on a terminal
// and returns what each received.
func ttyRun(t *testing.T, baseURL, dir string, stdoutTTY, stderrTTY bool, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := cliCommand(t, baseURL, dir, nil, args...)
	var outBuf, errBuf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outBuf, &errBuf
	var readers []chan string
	attach := func(set func(*os.File)) chan string {
		m, s := openPTY(t)
		set(s)
		ch := make(chan string, 1)
		go func() {
			b, _ := io.ReadAll(m) // ends with EIO once the child is gone and s is closed
			ch <- string(b)
		}()
		readers = append(readers, ch)
		return ch
	}
	var outCh, errCh chan string
	if stdoutTTY {
		outCh = attach(func(f *os.File) { cmd.Stdout = f })
	}
	if stderrTTY {
		errCh = attach(func(f *os.File) { cmd.Stderr = f })
	}
	err := cmd.Start()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []any{cmd.Stdout, cmd.Stderr} {
		if file, ok := f.(*os.File); ok {
			file.Close() // the child holds its own copy
		}
	}
	werr := cmd.Wait()
	if ee, ok := werr.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if werr != nil {
		t.Fatal(werr)
	}
	stdout, stderr = outBuf.String(), errBuf.String()
	if outCh != nil {
		stdout = <-outCh
	}
	if errCh != nil {
		stderr = <-errCh
	}
	return code, strings.ReplaceAll(stdout, "\r\n", "\n"), strings.ReplaceAll(stderr, "\r\n", "\n")
}

// TestCLITerminal: on a terminal, lists are tables and export and import
// draw a progress bar on stderr; off a terminal, neither (JSON on stdout,
// nothing on stderr).
func TestCLITerminal(t *testing.T) {
	t.Parallel()
	s := start(t, "sqlite")
	seedCLI(t, s, "acme", 300)
	dir := t.TempDir()

	code, out, _ := ttyRun(t, s.url, dir, true, false, "events", "list", "--account", "acme", "--limit", "3")
	if code != 0 || !strings.HasPrefix(out, "SEQ ") || !strings.Contains(out, " OCCURRED_AT ") || strings.Count(out, "\n") != 4 || strings.Contains(out, "{") {
		t.Fatalf("events list on a terminal: %d %q", code, out)
	}
	code, out, errOut := ttyRun(t, s.url, dir, false, true, "export", "--account", "acme", "--output", "a.csv")
	if code != 0 || !strings.HasPrefix(out, `{"file":"a.csv","format":"csv","account":"acme","written":300,`) {
		t.Fatalf("export with stderr on a terminal: %d stdout %q", code, out)
	}
	if !strings.Contains(errOut, "\rexport [") || !strings.Contains(errOut, "100%  300/300 events") {
		t.Fatalf("no progress bar on the terminal: %q", errOut)
	}
	code, out, errOut = ttyRun(t, s.url, dir, true, true, "export", "--account", "acme", "--output", "b.ndjson")
	if code != 0 || !strings.HasPrefix(out, "exported 300 events to b.ndjson (ndjson), up to seq 300") || !strings.Contains(errOut, "300/300 events") {
		t.Fatalf("export on a terminal: %d %q %q", code, out, errOut)
	}
	code, out, errOut = ttyRun(t, s.url, dir, true, true, "import", "--account", "copy", "--file", "b.ndjson")
	if code != 0 || !strings.HasPrefix(out, "imported 300 events from b.ndjson into account copy in 1 batch(es): 300 new") ||
		!strings.Contains(errOut, "\rimport [") || !strings.Contains(errOut, "100%  300/300 events") {
		t.Fatalf("import on a terminal: %d %q %q", code, out, errOut)
	}
	// Off a terminal: no progress, JSON.
	r := runCLI(t, s.url, dir, nil, "export", "--account", "acme", "--output", "c.ndjson").must(t, 0, "export to a pipe")
	if r.stderr != "" || !strings.HasPrefix(r.stdout, "{") {
		t.Fatalf("export off a terminal: stdout %q stderr %q", r.stdout, r.stderr)
	}
}
