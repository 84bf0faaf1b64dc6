package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"

	"github.com/nself-org/nself-audit/client"
)

const importUsage = `usage: nself-audit import --file FILE [--account ID]

Records the events of an NDJSON export (as 'nself-audit export' or
GET /api/v1/events/export writes it) into the account, in file order,
through POST /api/v1/events/batch, up to 1000 events a batch. A progress
bar is drawn on stderr when stderr is a terminal.

What is kept: every field the client gives (actor, action, resource,
outcome, severity, occurred_at, ip_address, user_agent, request_id,
source, metadata). What is not: the fields the service assigns (id,
source_account_id, seq, recorded_at, prev_hash, hash). The imported events
get new ids and form a new chain of the target account, appended after
its existing events, with new hashes; the original ids and hashes are not
kept anywhere. Keep the file: 'nself-audit verify --file FILE' still
proves the original chain.

Rerunnable: each batch carries an Idempotency-Key derived from its lines,
so rerunning the command after an interruption stores only what the
first run did not; batches already stored are answered from the first
time and counted as "already imported". The whole file is read and checked
before the first batch is sent: a line that is not an event stores nothing.

Output: a summary on stdout, as JSON when --json is given or stdout is not
a terminal.

` + commonUsage

// importBatchEvents and importBatchBytes cut the file into batches. The
// cut depends only on the file, so a rerun sends the same batches with the
// same keys; changing these constants changes the keys.
const (
	importBatchEvents = 1000
	importBatchBytes  = 12 << 20 // of lines; the request body, smaller, stays under the 16 MiB limit
)

// importVerb is `nself-audit import`.
func importVerb(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	c := newCLI(ctx, "import", importUsage, getenv, stdout, stderr)
	fs := c.flags(true)
	file := fs.String("file", "", "")
	pos, code, done := c.parse(fs, args)
	if done {
		return code
	}
	switch {
	case len(pos) > 0:
		return c.usageError("unexpected argument %q", pos[0])
	case *file == "":
		return c.usageError("--file: required")
	}
	f, err := os.Open(*file)
	if err != nil {
		return c.usageError("--file: %v", err)
	}
	defer f.Close()
	cl, code := c.client()
	if cl == nil {
		return code
	}
	// First pass: every line is an event, and how many there are.
	total, batches, err := readImport(f, nil)
	if err != nil {
		return c.fail(fmt.Errorf("%s: %v; nothing was imported", *file, err))
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return c.fail(err)
	}
	sum := importSummary{File: *file, Account: c.accountName(), Events: total, Batches: batches}
	prog := newProgress(stderr, "import", "events", total, 0)
	_, _, err = readImport(f, func(b *importBatch) error {
		res, err := cl.PostBatch(c.ctx, b.events, b.key())
		if err != nil {
			return b.explain(err)
		}
		if res.Replayed {
			sum.AlreadyImported += int64(len(res.Events))
		} else {
			sum.New += int64(len(res.Events))
		}
		prog.add(int64(len(b.events)), b.size)
		return nil
	})
	prog.finish()
	if err != nil {
		if sum.New+sum.AlreadyImported > 0 {
			fmt.Fprintf(stderr, "nself-audit import: %d of %d events are stored; rerun the same command to import the rest (nothing is stored twice)\n",
				sum.New+sum.AlreadyImported, total)
		}
		return c.fail(err)
	}
	if c.jsonOut() {
		c.printJSON(sum)
		return exitOK
	}
	fmt.Fprintf(stdout, "imported %d events from %s into account %s in %d batch(es): %d new, %d already imported by an earlier run\n",
		total, sum.File, sum.Account, sum.Batches, sum.New, sum.AlreadyImported)
	if total > 0 {
		fmt.Fprintf(stdout, "the events got new ids, seqs and hashes in account %s's own chain; the file keeps the original ones\n", sum.Account)
	}
	return exitOK
}

// importSummary is what import prints.
type importSummary struct {
	File            string `json:"file"`
	Account         string `json:"account"`
	Events          int64  `json:"events"` // in the file
	Batches         int64  `json:"batches"`
	New             int64  `json:"new"`              // stored by this run
	AlreadyImported int64  `json:"already_imported"` // stored by an earlier run with the same file
}

// importBatch is one batch of the file.
type importBatch struct {
	events []client.NewEvent
	lines  []int // the file line of each event
	hash   []byte
	size   int64
}

// key is the batch's Idempotency-Key: a digest of its lines, so the same
// lines in the same account are stored once however often they are sent.
func (b *importBatch) key() string { return "nself-audit-import-v1-" + hex.EncodeToString(b.hash) }

var batchIndex = regexp.MustCompile(`^events\[(\d+)\]: `)

// explain names the file line of an event the service refused.
func (b *importBatch) explain(err error) error {
	var apiErr *client.Error
	if errors.As(err, &apiErr) {
		if m := batchIndex.FindStringSubmatch(apiErr.Message); m != nil {
			if i, _ := strconv.Atoi(m[1]); i < len(b.lines) {
				return fmt.Errorf("line %d: refused: %s (%s)", b.lines[i], apiErr.Message[len(m[0]):], apiErr.Code)
			}
		}
	}
	return err
}

// readImport reads the file, checks each line and cuts it into batches,
// passing each to post (nil: only check and count).
func readImport(r io.Reader, post func(*importBatch) error) (events, batches int64, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var b *importBatch
	h := sha256.New()
	send := func() error {
		if b == nil {
			return nil
		}
		batches++
		b.hash = h.Sum(nil)
		h.Reset()
		var err error
		if post != nil {
			err = post(b)
		}
		b = nil
		return err
	}
	for line := 1; ; line++ {
		raw, rerr := br.ReadBytes('\n')
		if rerr != nil && rerr != io.EOF {
			return events, batches, rerr
		}
		if len(raw) > maxLine {
			return events, batches, fmt.Errorf("line %d: longer than %d bytes", line, maxLine)
		}
		text := bytes.TrimRight(raw, "\r\n")
		if len(bytes.TrimSpace(text)) > 0 {
			ne, err := importEvent(text)
			if err != nil {
				return events, batches, fmt.Errorf("line %d: %v", line, err)
			}
			if b != nil && (len(b.events) == importBatchEvents || b.size+int64(len(raw)) > importBatchBytes) {
				if err := send(); err != nil {
					return events, batches, err
				}
			}
			if b == nil {
				b = &importBatch{}
			}
			b.events = append(b.events, ne)
			b.lines = append(b.lines, line)
			b.size += int64(len(raw))
			h.Write(text)
			h.Write([]byte{'\n'})
			events++
		}
		if rerr == io.EOF {
			break
		}
	}
	return events, batches, send()
}

// importEvent reads one exported event and keeps the fields a client
// gives.
func importEvent(line []byte) (client.NewEvent, error) {
	var e client.Event
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return client.NewEvent{}, fmt.Errorf("not an event as the export writes it: %v", err)
	}
	if e.Action == "" || e.OccurredAt.IsZero() {
		return client.NewEvent{}, errors.New("not an event as the export writes it: no action or occurred_at")
	}
	return client.NewEvent{
		Action: e.Action, ActorID: e.ActorID, ActorType: e.ActorType,
		ResourceType: e.ResourceType, ResourceID: e.ResourceID, Outcome: e.Outcome, Severity: e.Severity,
		OccurredAt: e.OccurredAt, IPAddress: e.IPAddress, UserAgent: e.UserAgent, RequestID: e.RequestID,
		Source: e.Source, Metadata: e.Metadata,
	}, nil
}
