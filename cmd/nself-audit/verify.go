package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/nself-org/nself-audit/internal/audit"
)

// maxLine bounds one NDJSON line: an event is at most 64 KiB of metadata
// plus its fields, so 1 MiB is generous.
const maxLine = 1 << 20

// verifyFile is `nself-audit verify --file events.ndjson`: it checks an
// export offline, with no server and no database. Exit 0 when every link
// and hash holds, 1 when one does not, 2 on a usage error.
func verifyFile(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("file", "", "NDJSON export to verify (from GET /api/v1/events/export)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: nself-audit verify --file events.ndjson\n\nRecomputes every hash and checks every link of the exported chain, offline.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	f, err := os.Open(*file)
	if err != nil {
		fmt.Fprintf(stderr, "nself-audit verify: %v\n", err)
		return 2
	}
	defer f.Close()
	results, err := verifyNDJSON(f)
	if err != nil {
		fmt.Fprintf(stdout, "FAIL: %v\n", err)
		return 1
	}
	if len(results) == 0 {
		fmt.Fprintln(stdout, "FAIL: the file holds no events")
		return 1
	}
	for _, r := range results {
		fmt.Fprintf(stdout, "ok: account %s: %d events verify, seq %d to %d, head hash %s\n", r.account, r.count, r.first, r.last, r.head)
		if r.first > 1 {
			fmt.Fprintf(stdout, "    (the file starts at seq %d: its link to seq %d is taken from the file, not proven)\n", r.first, r.first-1)
		}
	}
	return 0
}

type fileResult struct {
	account            string
	count, first, last int64
	head               string
}

// verifyNDJSON checks each account's events in file order. An account's
// first event in the file anchors its chain: seq 1 must link to the genesis
// hash; a later seq is taken as given.
func verifyNDJSON(r io.Reader) ([]fileResult, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	verifiers := map[string]*audit.ChainVerifier{}
	results := map[string]*fileResult{}
	line := 0
	for sc.Scan() {
		line++
		if len(sc.Bytes()) == 0 {
			continue
		}
		var e audit.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("line %d: not an event: %v", line, err)
		}
		v, ok := verifiers[e.SourceAccountID]
		if !ok {
			v = audit.NewChainVerifier()
			if e.Seq > 1 {
				v = audit.NewChainVerifierAt(e.Seq-1, e.PrevHash)
			}
			verifiers[e.SourceAccountID] = v
			results[e.SourceAccountID] = &fileResult{account: e.SourceAccountID, first: e.Seq}
		}
		if err := v.Check(&e); err != nil {
			var ce *audit.ChainError
			if errors.As(err, &ce) {
				return nil, fmt.Errorf("account %s: first bad seq %d (line %d): %s", e.SourceAccountID, ce.Seq, line, ce.Reason)
			}
			return nil, fmt.Errorf("account %s, line %d: %v", e.SourceAccountID, line, err)
		}
		res := results[e.SourceAccountID]
		res.count++
		res.last, res.head = v.Head()
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("after line %d: %v", line, err)
	}
	out := make([]fileResult, 0, len(results))
	for _, r := range results {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].account < out[j].account })
	return out, nil
}
