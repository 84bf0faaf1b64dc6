package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nself-org/nself-audit/client"
)

const eventsUsage = `usage: nself-audit events list|get|tail [flags]

Reads the events of a running nself-audit.

  events list [filters] [--limit N] [--sort asc|desc] [--all]   list events
  events get ID                                                  one event
  events tail [filters] [--after SEQ]                            follow new events live

Run 'nself-audit events VERB --help' for each verb's flags.
`

// eventsVerb dispatches `nself-audit events VERB`.
func eventsVerb(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, eventsUsage)
		return exitUsage
	}
	switch args[0] {
	case "list":
		return eventsList(newCLI(ctx, "events list", eventsListUsage, getenv, stdout, stderr), args[1:])
	case "get":
		return eventsGet(newCLI(ctx, "events get", eventsGetUsage, getenv, stdout, stderr), args[1:])
	case "tail":
		return eventsTail(newCLI(ctx, "events tail", eventsTailUsage, getenv, stdout, stderr), args[1:])
	case "help", "--help", "-help", "-h":
		fmt.Fprint(stdout, eventsUsage)
		return exitOK
	}
	fmt.Fprintf(stderr, "nself-audit events: unknown verb %q\n\n%s", args[0], eventsUsage)
	return exitUsage
}

const eventsListUsage = `usage: nself-audit events list [filters] [--limit N] [--sort asc|desc] [--cursor C] [--all] [--json|--table]

Lists the account's events (GET /api/v1/events), newest first unless
--sort asc. Without --all it prints one page and, when there is more,
the cursor of the next page on stderr; --all follows every cursor.

  --limit N            page size, 1 to 1000 (default 50)
  --sort asc|desc      order by occurred_at (default desc)
  --cursor C           continue from a previous page's cursor
  --all                every page

` + filterUsage + "\n" + outputUsage + "\n" + commonUsage

func eventsList(c *cli, args []string) int {
	fs := c.flags(true)
	var ff filterFlags
	ff.register(fs)
	limit := fs.Int("limit", 0, "")
	sortOrder := fs.String("sort", "", "")
	cursor := fs.String("cursor", "", "")
	all := fs.Bool("all", false, "")
	f, code, ok := c.parseFiltered(fs, &ff, args)
	if !ok {
		return code
	}
	if *limit < 0 || *limit > 1000 {
		return c.usageError("--limit: must be from 1 to 1000")
	}
	cl, code := c.client()
	if cl == nil {
		return code
	}
	out := newEventPrinter(c)
	o := client.ListOptions{Filter: f, Limit: *limit, Sort: *sortOrder, Cursor: *cursor}
	if *all {
		for e, err := range cl.AllEvents(c.ctx, o) {
			if err != nil {
				out.flush()
				return c.fail(err)
			}
			out.event(e)
		}
		return out.flush()
	}
	page, err := cl.ListEvents(c.ctx, o)
	if err != nil {
		return c.fail(err)
	}
	for i := range page.Events {
		out.event(&page.Events[i])
	}
	code = out.flush()
	if page.NextCursor != nil {
		fmt.Fprintf(c.stderr, "more: --cursor %s (or --all)\n", *page.NextCursor)
	}
	return code
}

// eventPrinter prints events as NDJSON or as the rows of one table.
type eventPrinter struct {
	c      *cli
	json   bool
	tw     *tabwriter.Writer
	header bool
	count  int
	live   bool // flush each row (tail)
}

func newEventPrinter(c *cli) *eventPrinter {
	p := &eventPrinter{c: c, json: c.jsonOut()}
	if !p.json {
		p.tw = tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	}
	return p
}

const eventColumns = "SEQ\tOCCURRED_AT\tACTOR\tACTION\tRESOURCE\tOUTCOME\tSEVERITY\tID"

func (p *eventPrinter) event(e *client.Event) {
	p.count++
	if p.json {
		p.c.printJSON(e)
		return
	}
	if !p.header {
		fmt.Fprintln(p.tw, eventColumns)
		p.header = true
	}
	actor := e.ActorID
	if actor == "" {
		actor = "(" + e.ActorType + ")"
	} else if e.ActorType != "user" {
		actor += " (" + e.ActorType + ")"
	}
	resource := e.ResourceType
	if e.ResourceID != "" {
		resource += ":" + e.ResourceID
	}
	fmt.Fprintf(p.tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.OccurredAt.UTC().Format("2006-01-02 15:04:05.000"),
		cell(actor), cell(e.Action), cell(resource), e.Outcome, e.Severity, e.ID)
	if p.live {
		p.tw.Flush()
	}
}

// cell keeps one table cell on one line and of a readable width.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if r := []rune(s); len(r) > 48 {
		s = string(r[:47]) + "…"
	}
	return s
}

func (p *eventPrinter) flush() int {
	if p.tw != nil {
		if p.count == 0 && !p.live {
			fmt.Fprintln(p.c.stdout, "no events")
		}
		p.tw.Flush()
	}
	return exitOK
}

const eventsGetUsage = `usage: nself-audit events get ID [--json|--table]

Prints one event (GET /api/v1/events/{id}). An id that the account does
not hold is a failure (exit 1, "not_found").

` + outputUsage + "\n" + commonUsage

func eventsGet(c *cli, args []string) int {
	fs := c.flags(true)
	pos, code, done := c.parse(fs, args)
	if done {
		return code
	}
	if len(pos) != 1 {
		return c.usageError("want one event id")
	}
	cl, code := c.client()
	if cl == nil {
		return code
	}
	e, err := cl.GetEvent(c.ctx, pos[0])
	if err != nil {
		return c.fail(err)
	}
	if c.jsonOut() {
		c.printJSON(e)
		return exitOK
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	for _, kv := range [][2]string{
		{"id", e.ID}, {"account", e.SourceAccountID}, {"seq", strconv.FormatInt(e.Seq, 10)},
		{"occurred_at", e.OccurredAt.Format(client.TimeFormat)}, {"recorded_at", e.RecordedAt.Format(client.TimeFormat)},
		{"actor", e.ActorID + " (" + e.ActorType + ")"}, {"action", e.Action},
		{"resource", e.ResourceType + " " + e.ResourceID}, {"outcome", e.Outcome}, {"severity", e.Severity},
		{"ip_address", e.IPAddress}, {"user_agent", e.UserAgent}, {"request_id", e.RequestID}, {"source", e.Source},
		{"metadata", string(e.Metadata)}, {"prev_hash", e.PrevHash}, {"hash", e.Hash},
	} {
		v := strings.TrimSpace(kv[1])
		if v == "" {
			v = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\n", kv[0], strings.ReplaceAll(v, "\n", " "))
	}
	tw.Flush()
	return exitOK
}

const eventsTailUsage = `usage: nself-audit events tail [filters] [--after SEQ] [--json|--table]

Follows the account's events live (GET /api/v1/events/stream) and prints
each matching event as it is recorded, until interrupted (Ctrl-C, exit 0).
When the connection drops it reconnects and resumes after the last event
printed, so none is lost or printed twice.

  --after SEQ          first print the matching events after this seq
                       (0: the whole chain), then the live ones; default:
                       only events recorded from now on

` + filterUsage + "\n" + outputUsage + "\n" + commonUsage

func eventsTail(c *cli, args []string) int {
	fs := c.flags(true)
	var ff filterFlags
	ff.register(fs)
	after := fs.String("after", "", "")
	f, code, ok := c.parseFiltered(fs, &ff, args)
	if !ok {
		return code
	}
	o := client.TailOptions{Filter: f, OnReconnect: func(err error) {
		fmt.Fprintf(c.stderr, "nself-audit events tail: reconnecting (%v)\n", err)
	}}
	if *after != "" {
		n, err := strconv.ParseInt(*after, 10, 64)
		if err != nil || n < 0 {
			return c.usageError("--after: must be a seq, 0 or more")
		}
		o.After = &n
	}
	cl, code := c.client()
	if cl == nil {
		return code
	}
	out := newEventPrinter(c)
	out.live = true
	err := cl.Tail(c.ctx, o, func(e *client.Event) error {
		out.event(e)
		return nil
	})
	out.flush()
	if c.ctx.Err() != nil {
		return exitOK // interrupted: the normal end of a tail
	}
	return c.fail(err)
}

const statsUsage = `usage: nself-audit stats [filters] [--interval day|hour] [--json|--table]

Summarises the account's events that match the filters (GET /api/v1/stats):
total, first and last time, distinct actors, the top actions, counts by
actor type, outcome and severity, and a timeline by day or hour.

  --interval day|hour  the timeline's buckets (default day)

` + filterUsage + "\n" + outputUsage + "\n" + commonUsage

// statsVerb is `nself-audit stats`.
func statsVerb(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	c := newCLI(ctx, "stats", statsUsage, getenv, stdout, stderr)
	fs := c.flags(true)
	var ff filterFlags
	ff.register(fs)
	interval := fs.String("interval", "", "")
	f, code, ok := c.parseFiltered(fs, &ff, args)
	if !ok {
		return code
	}
	cl, code := c.client()
	if cl == nil {
		return code
	}
	st, err := cl.Stats(c.ctx, client.StatsOptions{Filter: f, Interval: *interval})
	if err != nil {
		return c.fail(err)
	}
	if c.jsonOut() {
		c.printJSON(st)
		return exitOK
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	when := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.Format(client.TimeFormat)
	}
	fmt.Fprintf(tw, "account\t%s\n", c.accountName())
	fmt.Fprintf(tw, "events\t%d\n", st.Total)
	fmt.Fprintf(tw, "first\t%s\n", when(st.FirstEventAt))
	fmt.Fprintf(tw, "last\t%s\n", when(st.LastEventAt))
	fmt.Fprintf(tw, "actors\t%d\n", st.DistinctActors)
	counts := func(title string, m map[string]int64) {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
		fmt.Fprintf(tw, "%s\t%s\n", title, strings.Join(parts, ", "))
	}
	counts("actor types", st.ByActorType)
	counts("outcomes", st.ByOutcome)
	counts("severities", st.BySeverity)
	tw.Flush()
	if len(st.ByAction) > 0 {
		fmt.Fprintln(c.stdout, "\nTOP ACTIONS")
		for _, a := range st.ByAction {
			fmt.Fprintf(tw, "  %s\t%d\n", a.Action, a.Count)
		}
		tw.Flush()
	}
	if len(st.Timeline) > 0 {
		fmt.Fprintln(c.stdout, "\nTIMELINE")
		format := "2006-01-02"
		if *interval == "hour" {
			format = "2006-01-02 15:00"
		}
		for _, b := range st.Timeline {
			fmt.Fprintf(tw, "  %s\t%d\n", b.Bucket.Format(format), b.Count)
		}
		tw.Flush()
	}
	return exitOK
}
