package main

import (
	"bufio"
	"crypto/ed25519"
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
	cpFile := fs.String("checkpoints", "", "checkpoints to check against the file (the body of GET /api/v1/checkpoints)")
	var keyFiles stringList
	fs.Var(&keyFiles, "public-key", "file holding a checkpoint public key, standard base64 (repeat for rotated keys)")
	partial := fs.Bool("partial", false, "the file is a range of the chain: checkpoints past its end are not an error")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: nself-audit verify --file events.ndjson [--checkpoints checkpoints.json --public-key KEY] [--partial]\n\n"+
			"Recomputes every hash and checks every link of the exported chain, offline; with checkpoints,\n"+
			"checks each signature and that the file holds the signed events.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file == "" || fs.NArg() > 0 || (*cpFile != "") != (len(keyFiles) > 0) {
		fs.Usage()
		return 2
	}
	var checkpoints []*audit.Checkpoint
	keys := map[string]ed25519.PublicKey{}
	if *cpFile != "" {
		var err error
		if checkpoints, err = readCheckpoints(*cpFile); err != nil {
			fmt.Fprintf(stderr, "nself-audit verify: %v\n", err)
			return 2
		}
		for _, path := range keyFiles {
			b, err := os.ReadFile(path)
			if err != nil {
				fmt.Fprintf(stderr, "nself-audit verify: %v\n", err)
				return 2
			}
			pub, err := audit.ParsePublicKey(string(b))
			if err != nil {
				fmt.Fprintf(stderr, "nself-audit verify: %s: %v\n", path, err)
				return 2
			}
			keys[audit.KeyID(pub)] = pub
		}
	}
	f, err := os.Open(*file)
	if err != nil {
		fmt.Fprintf(stderr, "nself-audit verify: %v\n", err)
		return 2
	}
	defer f.Close()
	results, err := verifyNDJSON(f, checkpoints, keys, *partial)
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
		if len(checkpoints) > 0 {
			if r.checkpoints == 0 {
				fmt.Fprintln(stdout, "    no signed checkpoint falls in the file: nothing proves these events were not rewritten")
			} else {
				fmt.Fprintf(stdout, "    %d signed %s in the file's range verify, the last at seq %d: events up to it are proven as signed\n",
					r.checkpoints, plural(r.checkpoints, "checkpoint", "checkpoints"), r.lastCheckpoint)
				if r.last > r.lastCheckpoint {
					fmt.Fprintf(stdout, "    events after seq %d are chained but not yet covered by a signature\n", r.lastCheckpoint)
				}
			}
		}
	}
	return 0
}

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return fmt.Sprint(*l) }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// readCheckpoints reads {"checkpoints":[...]} as the API answers it, a bare
// array, or one checkpoint (GET /api/v1/checkpoints/latest).
func readCheckpoints(path string) ([]*audit.Checkpoint, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var list struct {
		Checkpoints []*audit.Checkpoint `json:"checkpoints"`
	}
	if err := json.Unmarshal(b, &list); err == nil && list.Checkpoints != nil {
		return list.Checkpoints, nil
	}
	var arr []*audit.Checkpoint
	if err := json.Unmarshal(b, &arr); err == nil {
		return arr, nil
	}
	var one audit.Checkpoint
	if err := json.Unmarshal(b, &one); err == nil && one.Signature != "" {
		return []*audit.Checkpoint{&one}, nil
	}
	return nil, fmt.Errorf("%s: not checkpoints as GET /api/v1/checkpoints answers them", path)
}

// checkCheckpoints verifies each checkpoint's signature, its link to the
// previous checkpoint of the list, and groups them by account and seq.
func checkCheckpoints(cs []*audit.Checkpoint, keys map[string]ed25519.PublicKey) (map[string]map[int64]*audit.Checkpoint, error) {
	out := map[string]map[int64]*audit.Checkpoint{}
	prev := map[string]*audit.Checkpoint{}
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].Seq < cs[j].Seq })
	for _, c := range cs {
		pub, ok := keys[c.KeyID]
		if !ok {
			return nil, fmt.Errorf("checkpoint at seq %d of account %s: signed by key %s, which no --public-key names", c.Seq, c.SourceAccountID, c.KeyID)
		}
		if err := audit.VerifyCheckpoint(c, pub); err != nil {
			return nil, fmt.Errorf("account %s: %v", c.SourceAccountID, err)
		}
		if p := prev[c.SourceAccountID]; p != nil && c.PrevSignature != p.Signature {
			return nil, fmt.Errorf("account %s: checkpoint at seq %d does not follow the checkpoint at seq %d (one is missing or forged)", c.SourceAccountID, c.Seq, p.Seq)
		}
		prev[c.SourceAccountID] = c
		if out[c.SourceAccountID] == nil {
			out[c.SourceAccountID] = map[int64]*audit.Checkpoint{}
		}
		out[c.SourceAccountID][c.Seq] = c
	}
	return out, nil
}

type fileResult struct {
	account                     string
	count, first, last          int64
	head                        string
	checkpoints, lastCheckpoint int64
}

// verifyNDJSON checks each account's events in file order. An account's
// first event in the file anchors its chain: seq 1 must link to the genesis
// hash; a later seq is taken as given.
func verifyNDJSON(r io.Reader, checkpoints []*audit.Checkpoint, keys map[string]ed25519.PublicKey, partial bool) ([]fileResult, error) {
	signed, err := checkCheckpoints(checkpoints, keys)
	if err != nil {
		return nil, err
	}
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
		ep, err := audit.DecodeEvent(sc.Bytes())
		if err != nil {
			return nil, fmt.Errorf("line %d: not an event: %s", line, audit.ErrorMessage(err))
		}
		e := *ep
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
		if c, ok := signed[e.SourceAccountID][e.Seq]; ok {
			if c.Hash != e.Hash {
				return nil, fmt.Errorf("account %s: first bad seq %d (line %d): the signed checkpoint names another hash (the chain was rewritten)", e.SourceAccountID, e.Seq, line)
			}
			res.checkpoints++
			res.lastCheckpoint = e.Seq
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("after line %d: %v", line, err)
	}
	if !partial {
		// A checkpoint past the file's end proves events are missing from it.
		for account, byseq := range signed {
			res, ok := results[account]
			for seq := range byseq {
				if !ok || seq > res.last {
					last := int64(0)
					if ok {
						last = res.last
					}
					return nil, fmt.Errorf("account %s: first bad seq %d: the file ends at seq %d, but a signed checkpoint covers seq %d (the file was truncated; use --partial for a range export)", account, last+1, last, seq)
				}
			}
		}
	}
	out := make([]fileResult, 0, len(results))
	for _, r := range results {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].account < out[j].account })
	return out, nil
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
