package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nself-org/nself-audit/client"
)

const exportUsage = `usage: nself-audit export --output FILE [--format ndjson|csv] [--from-seq N] [--to-seq N] [filters]

Writes the account's chain in seq order to FILE (GET /api/v1/events/export):
NDJSON, one event per line exactly as the API returns it (the input of
'nself-audit verify --file' and 'nself-audit import'), or CSV with a header
row. A progress bar is drawn on stderr when stderr is a terminal.

Resumable: when FILE already holds part of an export, the command keeps
every complete line (or CSV row), drops a torn last one, and continues
after the last seq it holds, so rerunning the same command after an
interruption ends with the same file as one uninterrupted run, with no
event twice. A connection that breaks during the run is resumed the same
way, up to 5 times. Rerun with the same account, format and filters.

  --output FILE        the file to write (created 0600, or continued)
  --format F           ndjson or csv; default from FILE's extension
                       (.csv: csv, anything else: ndjson)
  --from-seq N, --to-seq N   only this range of the chain

` + filterUsage + `
Output: a summary on stdout, as JSON when --json is given or stdout is not
a terminal.

` + commonUsage

// csvHeader is the header row of a CSV export (docs/API.md).
const csvHeader = "id,source_account_id,seq,occurred_at,recorded_at,actor_id,actor_type,action,resource_type,resource_id,outcome,severity,ip_address,user_agent,request_id,source,metadata,prev_hash,hash\n"

// csvColumns is the number of columns of csvHeader.
const csvColumns = 19

// exportVerb is `nself-audit export`.
func exportVerb(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	c := newCLI(ctx, "export", exportUsage, getenv, stdout, stderr)
	fs := c.flags(true)
	var ff filterFlags
	ff.register(fs)
	output := fs.String("output", "", "")
	format := fs.String("format", "", "")
	from := fs.Int64("from-seq", 0, "")
	to := fs.Int64("to-seq", 0, "")
	pos, code, done := c.parse(fs, args)
	if done {
		return code
	}
	f, err := ff.filter()
	switch {
	case len(pos) > 0:
		return c.usageError("unexpected argument %q", pos[0])
	case *output == "":
		return c.usageError("--output: required")
	case err != nil:
		return c.usageError("%v", err)
	case *from < 0 || *to < 0:
		return c.usageError("--from-seq and --to-seq: must be 1 or more")
	case *from > 0 && *to > 0 && *from > *to:
		return c.usageError("--from-seq: must not be greater than --to-seq")
	}
	if *format == "" {
		*format = "ndjson"
		if strings.EqualFold(filepath.Ext(*output), ".csv") {
			*format = "csv"
		}
	}
	if *format != "ndjson" && *format != "csv" {
		return c.usageError("--format: must be ndjson or csv")
	}
	cl, code := c.client()
	if cl == nil {
		return code
	}
	x := &exporter{c: c, cl: cl, path: *output, csv: *format == "csv", filter: f, from: *from, to: *to}
	sum, err := x.run()
	if err != nil {
		if sum != nil && sum.LastSeq > 0 {
			fmt.Fprintf(stderr, "nself-audit export: %s holds the events up to seq %d; rerun the same command to continue\n", *output, sum.LastSeq)
		}
		return c.fail(err)
	}
	if c.jsonOut() {
		c.printJSON(sum)
		return exitOK
	}
	switch {
	case sum.ResumedAfterSeq > 0:
		fmt.Fprintf(stdout, "exported %d events to %s (%s), continuing after seq %d; the file holds %d events, up to seq %d\n",
			sum.Written, sum.File, sum.Format, sum.ResumedAfterSeq, sum.InFile, sum.LastSeq)
	case sum.InFile == 0:
		fmt.Fprintf(stdout, "exported 0 events to %s (%s): none matches\n", sum.File, sum.Format)
	default:
		fmt.Fprintf(stdout, "exported %d events to %s (%s), up to seq %d\n", sum.Written, sum.File, sum.Format, sum.LastSeq)
	}
	return exitOK
}

// exportSummary is what export prints.
type exportSummary struct {
	File            string `json:"file"`
	Format          string `json:"format"`
	Account         string `json:"account"`
	Written         int64  `json:"written"`           // events written by this run
	InFile          int64  `json:"in_file"`           // events the file holds now
	LastSeq         int64  `json:"last_seq"`          // the seq of its last event; 0 when it holds none
	ResumedAfterSeq int64  `json:"resumed_after_seq"` // 0 when the run started a new file
	DroppedBytes    int64  `json:"dropped_bytes"`     // a torn last line removed before continuing
}

type exporter struct {
	c        *cli
	cl       *client.Client
	path     string
	csv      bool
	filter   client.Filter
	from, to int64
}

// maxExportRetries bounds how often one run resumes a broken stream.
const maxExportRetries = 5

func (x *exporter) run() (*exportSummary, error) {
	sum := &exportSummary{File: x.path, Format: "ndjson", Account: x.c.accountName()}
	if x.csv {
		sum.Format = "csv"
	}
	_, statErr := os.Stat(x.path)
	created := errors.Is(statErr, fs.ErrNotExist)
	f, err := os.OpenFile(x.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := scanExport(f, x.csv, sum.Account)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", x.path, err)
	}
	if err := f.Truncate(st.keep); err != nil {
		return nil, err
	}
	if _, err := f.Seek(st.keep, io.SeekStart); err != nil {
		return nil, err
	}
	sum.DroppedBytes, sum.InFile, sum.LastSeq, sum.ResumedAfterSeq = st.size-st.keep, st.count, st.lastSeq, st.lastSeq

	var total int64
	if x.from == 0 && x.to == 0 {
		if s, err := x.cl.Stats(x.c.ctx, client.StatsOptions{Filter: x.filter}); err == nil {
			total = s.Total
		}
	}
	prog := newProgress(x.c.stderr, "export", "events", total, st.count)
	bw := bufio.NewWriterSize(f, 256<<10)
	haveHeader := st.header
	var werr error
	write := func(rec []byte, header bool) {
		if werr == nil {
			_, werr = bw.Write(rec)
		}
		if !header {
			prog.add(1, int64(len(rec)))
		}
	}
	for retries := 0; ; retries++ {
		from := max(x.from, sum.LastSeq+1)
		if x.to > 0 && from > x.to {
			break
		}
		first := true
		sp := &splitter{csv: x.csv, flush: bw.Flush, emit: func(rec []byte) error {
			if x.csv && first {
				first = false
				if string(rec) != csvHeader {
					return &stopExport{fmt.Errorf("the service's CSV header differs from the one this binary knows: %q", rec)}
				}
				if !haveHeader {
					write(rec, true)
					haveHeader = true
				}
				return werr
			}
			seq, account, err := recordSeq(rec, x.csv)
			if err != nil {
				return &stopExport{fmt.Errorf("the service sent a line that is not an event: %v", err)}
			}
			if account != sum.Account {
				return &stopExport{fmt.Errorf("the service sent an event of account %s, not %s", account, sum.Account)}
			}
			if seq <= sum.LastSeq { // never twice
				return nil
			}
			write(rec, false)
			sum.Written++
			sum.InFile++
			sum.LastSeq = seq
			return werr
		}}
		_, err := x.cl.Export(x.c.ctx, sp, client.ExportOptions{Format: sum.Format, Filter: x.filter,
			SeqRange: client.SeqRange{FromSeq: from, ToSeq: x.to}})
		if err == nil && len(sp.pending) > 0 {
			err = errors.New("the stream ended inside a line")
		}
		if ferr := bw.Flush(); err == nil {
			err = ferr
		}
		if err == nil {
			break
		}
		// Only a broken connection is resumed: a refusal, a file that
		// cannot be written or an answer that is not an export ends the run.
		var apiErr *client.Error
		var stop *stopExport
		if x.c.ctx.Err() != nil || errors.As(err, &apiErr) || errors.As(err, &stop) || werr != nil || retries >= maxExportRetries {
			prog.finish()
			x.dropNew(f, created, sum)
			if stop != nil {
				err = stop.err
			}
			return sum, err
		}
		fmt.Fprintf(x.c.stderr, "nself-audit export: %v; continuing after seq %d\n", err, sum.LastSeq)
		select {
		case <-x.c.ctx.Done():
		case <-time.After(time.Second):
		}
	}
	prog.finish()
	if err := f.Sync(); err != nil {
		return sum, err
	}
	return sum, nil
}

// dropNew removes a file this run created and wrote nothing to.
func (x *exporter) dropNew(f *os.File, created bool, sum *exportSummary) {
	if info, err := f.Stat(); created && err == nil && info.Size() == 0 && sum.InFile == 0 {
		os.Remove(x.path)
	}
}

var errNotEvent = errors.New("not an event")

// stopExport is an error after which resuming cannot help.
type stopExport struct{ err error }

func (e *stopExport) Error() string { return e.err.Error() }

// exportState is what a file already holds.
type exportState struct {
	size    int64 // the file's size
	keep    int64 // the end of its last complete line or row
	count   int64 // the events in [0, keep)
	lastSeq int64 // the seq of the last of them; 0 for none
	header  bool  // a CSV file: the header row is complete
}

// scanExport reads an export file to find where its last complete record
// ends and which seq it holds; account is the account being exported,
// which the last event must belong to.
func scanExport(r io.Reader, isCSV bool, account string) (exportState, error) {
	var st exportState
	var last []byte
	first := true
	sp := &splitter{csv: isCSV, emit: func(rec []byte) error {
		if isCSV && first {
			first = false
			if string(rec) != csvHeader {
				return errors.New("does not start with the CSV header of an nself-audit export; not continuing it (choose another file, or move this one away)")
			}
			st.header = true
		} else {
			st.count++
			last = append(last[:0], rec...)
		}
		st.keep += int64(len(rec))
		return nil
	}}
	n, err := io.Copy(sp, r)
	st.size = n
	if err != nil {
		return st, err
	}
	if st.count > 0 {
		seq, acct, err := recordSeq(last, isCSV)
		if err != nil {
			return st, fmt.Errorf("its last complete line is not an event of an nself-audit export (%v); not continuing it", err)
		}
		if acct != account {
			return st, fmt.Errorf("holds events of account %s, not %s; not continuing it", acct, account)
		}
		st.lastSeq = seq
	}
	return st, nil
}

// recordSeq returns the seq and account of one exported line or row.
func recordSeq(rec []byte, isCSV bool) (int64, string, error) {
	if !isCSV {
		var e struct {
			Seq     *int64  `json:"seq"`
			Account *string `json:"source_account_id"`
		}
		if err := json.Unmarshal(rec, &e); err != nil || e.Seq == nil || e.Account == nil || *e.Seq < 1 {
			return 0, "", fmt.Errorf("%w: %.80q", errNotEvent, rec)
		}
		return *e.Seq, *e.Account, nil
	}
	row, err := csv.NewReader(bytes.NewReader(rec)).Read()
	if err != nil || len(row) != csvColumns {
		return 0, "", fmt.Errorf("%w: %.80q", errNotEvent, rec)
	}
	seq, err := strconv.ParseInt(row[2], 10, 64)
	if err != nil || seq < 1 {
		return 0, "", fmt.Errorf("%w: %.80q", errNotEvent, rec)
	}
	return seq, row[1], nil
}

// splitter is an io.Writer that cuts what is written to it into complete
// records and passes each to emit, with its line end; what follows the
// last line end waits in pending. A CSV record ends at a line end outside
// quotes (RFC 4180: a quoted field may hold line ends; "" is a quote inside
// one, which toggles the state twice). flush, if set, is called after each
// write, so complete records reach the file as they arrive.
type splitter struct {
	csv     bool
	inQuote bool
	pending []byte
	emit    func(rec []byte) error
	flush   func() error
}

// maxRecord bounds one record: an event is far smaller.
const maxRecord = 16 << 20

func (s *splitter) Write(p []byte) (int, error) {
	start := 0
	for i, b := range p {
		switch {
		case b == '"' && s.csv:
			s.inQuote = !s.inQuote
		case b == '\n' && !s.inQuote:
			rec := p[start : i+1]
			if len(s.pending) > 0 {
				s.pending = append(s.pending, rec...)
				rec = s.pending
			}
			if err := s.emit(rec); err != nil {
				return i, err
			}
			s.pending = s.pending[:0]
			start = i + 1
		}
	}
	s.pending = append(s.pending, p[start:]...)
	if len(s.pending) > maxRecord {
		return len(p), errors.New("a line longer than 16 MiB")
	}
	if s.flush != nil {
		if err := s.flush(); err != nil {
			return len(p), err
		}
	}
	return len(p), nil
}
