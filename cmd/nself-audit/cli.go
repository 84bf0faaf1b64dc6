package main

// The client verbs: events list|get|tail, stats, export, import and the
// server form of verify. They call a running service through package
// client; this file holds what they share: the environment, the common
// flags, the output mode and the exit codes.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/mattn/go-isatty"

	"github.com/nself-org/nself-audit/client"
)

// Exit codes of every verb.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// defaultURL is the service's address when NSELF_AUDIT_URL is unset.
const defaultURL = "http://127.0.0.1:3843"

// cli is one run of a client verb.
type cli struct {
	ctx            context.Context
	getenv         func(string) string
	stdout, stderr io.Writer
	name           string // "events list", for messages
	usage          string // the verb's --help text

	url, account string
	asJSON       bool
	asTable      bool
}

func newCLI(ctx context.Context, name, usage string, getenv func(string) string, stdout, stderr io.Writer) *cli {
	return &cli{ctx: ctx, getenv: getenv, stdout: stdout, stderr: stderr, name: name, usage: usage}
}

// flags returns the verb's flag set with the flags every verb has: --url,
// --account, and, when output is true, --json and --table.
func (c *cli) flags(output bool) *flag.FlagSet {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() {}
	u := c.getenv("NSELF_AUDIT_URL")
	if u == "" {
		u = defaultURL
	}
	fs.StringVar(&c.url, "url", u, "")
	fs.StringVar(&c.account, "account", "", "")
	if output {
		fs.BoolVar(&c.asJSON, "json", false, "")
		fs.BoolVar(&c.asTable, "table", false, "")
	}
	return fs
}

// parse parses args, flags and positional arguments in any order, and
// returns the positional ones. done is true when the verb must return code
// (after --help, or a usage error already reported).
func (c *cli) parse(fs *flag.FlagSet, args []string) (pos []string, code int, done bool) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(c.stdout, c.usage)
				return nil, exitOK, true
			}
			fmt.Fprintf(c.stderr, "Run 'nself-audit %s --help' for usage.\n", c.name)
			return nil, exitUsage, true
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if c.asJSON && c.asTable {
		return nil, c.usageError("--json and --table: choose one"), true
	}
	return pos, 0, false
}

// usageError reports a usage error and returns its exit code.
func (c *cli) usageError(format string, a ...any) int {
	fmt.Fprintf(c.stderr, "nself-audit %s: %s\nRun 'nself-audit %s --help' for usage.\n", c.name, fmt.Sprintf(format, a...), c.name)
	return exitUsage
}

// fail reports a failure and returns its exit code.
func (c *cli) fail(err error) int {
	if errors.Is(err, context.Canceled) && c.ctx.Err() != nil {
		fmt.Fprintf(c.stderr, "nself-audit %s: interrupted\n", c.name)
		return exitFailure
	}
	var apiErr *client.Error
	if errors.As(err, &apiErr) {
		// The service's message first; status, code and request id for a
		// bug report or the service's log.
		detail := fmt.Sprintf("%d %s", apiErr.StatusCode, apiErr.Code)
		if apiErr.RequestID != "" {
			detail += ", request " + apiErr.RequestID
		}
		fmt.Fprintf(c.stderr, "nself-audit %s: %s (%s)\n", c.name, apiErr.Message, strings.TrimSpace(detail))
		return exitFailure
	}
	fmt.Fprintf(c.stderr, "nself-audit %s: %v\n", c.name, err)
	return exitFailure
}

// client returns the API client of the environment and flags. A missing
// or unusable configuration is a usage error: the returned code is
// non-zero.
func (c *cli) client() (*client.Client, int) {
	secret, err := readSecret(c.getenv)
	if err != nil {
		return nil, c.usageError("%v", err)
	}
	if secret == "" {
		return nil, c.usageError("no plugin token: set PLUGIN_INTERNAL_SECRET (or PLUGIN_SECRET, or *_FILE naming a file that holds it; " +
			"the embedded store keeps a generated token in its data folder, data/plugin-secret)")
	}
	opts := []client.Option{client.WithUserAgent("nself-audit/" + Version())}
	if c.account != "" {
		opts = append(opts, client.WithAccount(c.account))
	}
	cl, err := client.New(c.url, secret, opts...)
	if err != nil {
		return nil, c.usageError("--url / NSELF_AUDIT_URL: must be an http:// or https:// URL, such as %s", defaultURL)
	}
	return cl, 0
}

// accountName is the account the requests act for, for messages.
func (c *cli) accountName() string {
	if c.account == "" {
		return "primary"
	}
	return c.account
}

// jsonOut reports whether to print JSON: --json, or stdout is not a
// terminal and --table was not given.
func (c *cli) jsonOut() bool {
	if c.asJSON || c.asTable {
		return c.asJSON
	}
	return !isTerminal(c.stdout)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// printJSON writes v as one line of JSON, as the service writes it.
func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// filterFlags registers the list filters as flags named like the query
// parameters, with - for _ (--actor-id; --actor_id is accepted too).
type filterFlags struct {
	f            client.Filter
	since, until string
}

func (ff *filterFlags) register(fs *flag.FlagSet) {
	str := func(p *string, name string) {
		fs.StringVar(p, name, "", "")
		if alias := strings.ReplaceAll(name, "-", "_"); alias != name {
			fs.StringVar(p, alias, "", "")
		}
	}
	str(&ff.f.ActorID, "actor-id")
	str(&ff.f.ActorType, "actor-type")
	str(&ff.f.Action, "action")
	str(&ff.f.ResourceType, "resource-type")
	str(&ff.f.ResourceID, "resource-id")
	str(&ff.f.Outcome, "outcome")
	str(&ff.f.Severity, "severity")
	str(&ff.f.Source, "source")
	str(&ff.since, "since")
	str(&ff.until, "until")
}

// filter returns the filter, or a message naming the flag at fault.
// parseFiltered parses args for a verb that takes the filter flags ff
// (registered on fs) and no positional argument. When ok is false the verb
// returns code: help was shown, or the usage was wrong.
func (c *cli) parseFiltered(fs *flag.FlagSet, ff *filterFlags, args []string) (f client.Filter, code int, ok bool) {
	pos, code, done := c.parse(fs, args)
	if done {
		return f, code, false
	}
	if len(pos) > 0 {
		return f, c.usageError("unexpected argument %q", pos[0]), false
	}
	f, err := ff.filter()
	if err != nil {
		return f, c.usageError("%v", err), false
	}
	return f, 0, true
}

func (ff *filterFlags) filter() (client.Filter, error) {
	f := ff.f
	for _, t := range []struct {
		name string
		raw  string
		dst  *time.Time
	}{{"since", ff.since, &f.Since}, {"until", ff.until, &f.Until}} {
		if t.raw == "" {
			continue
		}
		v, err := time.Parse(time.RFC3339Nano, t.raw)
		if err != nil {
			return f, fmt.Errorf("--%s: not an RFC 3339 time such as 2026-01-02T15:04:05Z", t.name)
		}
		*t.dst = v
	}
	return f, nil
}

// filterUsage is the part of the --help texts that lists the filters.
const filterUsage = `Filters (as the query parameters of GET /api/v1/events; - or _ in names):
  --actor-id ID        --actor-type user|system|plugin|api_key|service
  --action A           exact (user.login) or a prefix (user.*)
  --resource-type T    --resource-id ID
  --outcome success|failure|denied
  --severity info|warning|error|critical
  --source S
  --since TIME         occurred_at >= TIME (RFC 3339)
  --until TIME         occurred_at <  TIME (RFC 3339)
`

// commonUsage is the part of the --help texts about the connection.
const commonUsage = `Connection:
  --url URL            the service (default $NSELF_AUDIT_URL, else http://127.0.0.1:3843)
  --account ID         act for this account (X-Source-Account-Id; default: primary)
  The plugin token comes from PLUGIN_INTERNAL_SECRET (or PLUGIN_SECRET, or
  PLUGIN_INTERNAL_SECRET_FILE / PLUGIN_SECRET_FILE naming a file).

Exit status: 0 ok, 1 failure (the service refused or could not be reached),
2 usage error.
`

// outputUsage is the part of the --help texts about the output.
const outputUsage = `Output:
  --json               JSON (lists: one event per line, as the export writes them)
  --table              an aligned table
  Default: a table when stdout is a terminal, else JSON.
`
