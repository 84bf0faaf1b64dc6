package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/nself-org/nself-audit/internal/audit"
	"github.com/nself-org/nself-audit/internal/capture"
	"github.com/nself-org/nself-audit/internal/postgres"
)

const captureUsage = `nself-audit capture: record data changes as audit events, without code in the services.

With Hasura (either store):
  nself-audit capture hasura [--table schema.table ...] [--key col[,col]] [--apply]
      Print the Hasura metadata API request (a bulk of pg_create_event_trigger)
      that sends every INSERT, UPDATE, DELETE and manual invocation on the tables
      to POST /api/v1/hooks/hasura, with the plugin token in X-Plugin-Secret
      taken from Hasura's environment. Without --table: every table Hasura
      tracks (read with export_metadata). --apply sends it to
      $HASURA_GRAPHQL_ENDPOINT/v1/metadata with $HASURA_GRAPHQL_ADMIN_SECRET.
      --webhook-url URL   the route as Hasura reaches it
                          ($NSELF_AUDIT_HOOK_URL, else http://nself-audit:3843/api/v1/hooks/hasura)
      --secret-env NAME   Hasura's variable holding the plugin token (PLUGIN_INTERNAL_SECRET)
      --source NAME       Hasura's database source of --table tables (default)

Without Hasura (PostgreSQL only: DATABASE_URL names the database of the tables):
  nself-audit capture add schema.table [--key col[,col]] [--setting name ...]
      Install the capture trigger: each INSERT, UPDATE and DELETE of the table is
      staged in np_nself_audit.np_audit_capture_changes in the same transaction,
      and the service moves it into the chain. --key names the resource id's
      columns (default: the primary key, else id); --setting records another
      setting of the writing session (hasura.user, request.jwt.claims,
      app.source_account_id and app.user_id always are). The columns of
      NSELF_AUDIT_REDACT_COLUMNS are redacted besides the default ones.
  nself-audit capture list
  nself-audit capture remove schema.table

See docs/CAPTURE.md.
`

// captureTick is the mover's pause between rounds.
var captureTick = 250 * time.Millisecond

// startMover starts moving staged table changes into the chain
// (PostgreSQL only; one mover leads among all processes on the database).
func (m *Main) startMover() {
	ctx, stop := context.WithCancel(context.Background())
	m.stopMover, m.moverDone = stop, make(chan struct{})
	mv := capture.NewMover(m.pg.CaptureStaging(), m.writer, capture.NewRedactor(m.cfg.Redact), m.logger)
	mv.Tick = captureTick
	go func() {
		defer close(m.moverDone)
		mv.Run(ctx)
	}()
}

// stopMoving stops the mover and waits for its round to end.
func (m *Main) stopMoving() {
	if m.stopMover != nil {
		m.stopMover()
		<-m.moverDone
		m.stopMover = nil
	}
}

// captureVerb runs `nself-audit capture ...` and returns the exit code.
func captureVerb(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, captureUsage)
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "nself-audit capture "+args[0]+": "+err.Error())
		return 1
	}
	switch args[0] {
	case "help", "--help", "-h":
		fmt.Fprint(stdout, captureUsage)
		return 0
	case "hasura":
		code, err := captureHasura(ctx, args[1:], getenv, stdout)
		if err != nil {
			fmt.Fprintln(stderr, "nself-audit capture hasura: "+err.Error())
		}
		return code
	case "add", "list", "remove":
	default:
		fmt.Fprintf(stderr, "nself-audit capture: unknown command %q\n\n%s", args[0], captureUsage)
		return 2
	}

	fs := flag.NewFlagSet("capture "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var keys string
	var settings listFlag
	if args[0] == "add" {
		fs.StringVar(&keys, "key", "", "the key columns, comma-separated")
		fs.Var(&settings, "setting", "another session setting to record (repeatable)")
	}
	positional, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return 2
	}
	want := 1
	if args[0] == "list" {
		want = 0
	}
	if len(positional) != want {
		if want == 0 {
			fmt.Fprintln(stderr, "nself-audit capture list: takes no arguments")
		} else {
			fmt.Fprintf(stderr, "nself-audit capture %s: name one table, as schema.table\n", args[0])
		}
		return 2
	}

	cfg, err := LoadConfig(getenv)
	if err != nil {
		return fail(err)
	}
	if cfg.Embedded() {
		return fail(errors.New("table capture works on PostgreSQL only: set DATABASE_URL to the database that holds the tables " +
			"(the embedded store has no tables of yours to capture; with Hasura, use nself-audit capture hasura)"))
	}
	store, err := postgres.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return fail(err)
	}
	defer store.Close()

	switch args[0] {
	case "list":
		list, err := store.CaptureList(ctx)
		if err != nil {
			return fail(errors.New(audit.ErrorMessage(err)))
		}
		if len(list) == 0 {
			fmt.Fprintln(stdout, "no table is captured")
		}
		for _, t := range list {
			fmt.Fprintf(stdout, "%s.%s\tkey=%s", t.Schema, t.Table, strings.Join(t.Keys, ","))
			if len(t.Redact) > 0 {
				fmt.Fprintf(stdout, "\tredact+=%s", strings.Join(t.Redact, ","))
			}
			if len(t.Settings) > 0 {
				fmt.Fprintf(stdout, "\tsettings+=%s", strings.Join(t.Settings, ","))
			}
			fmt.Fprintln(stdout)
		}
		return 0
	case "remove":
		schema, table, err := capture.ParseTableName(positional[0])
		if err != nil {
			return fail(err)
		}
		if err := store.CaptureRemove(ctx, schema, table); err != nil {
			return fail(errors.New(audit.ErrorMessage(err)))
		}
		fmt.Fprintf(stdout, "%s.%s is no longer captured (what it staged is still moved into the chain)\n", schema, table)
		return 0
	}

	// add
	schema, table, err := capture.ParseTableName(positional[0])
	if err != nil {
		return fail(err)
	}
	t := postgres.CapturedTable{Schema: schema, Table: table}
	if keys != "" {
		for _, k := range strings.Split(keys, ",") {
			if k = strings.TrimSpace(k); k == "" {
				return fail(errors.New("--key: want column names separated by commas"))
			}
			t.Keys = append(t.Keys, k)
		}
	}
	for _, s := range settings {
		if !settingName.MatchString(s) {
			return fail(fmt.Errorf("--setting %q: want a custom setting name such as app.tenant (letters, digits, _ and a dot)", s))
		}
		t.Settings = append(t.Settings, s)
	}
	for _, p := range cfg.Redact {
		t.Redact = append(t.Redact, capture.NormalizeName(p))
	}
	// The trigger's function comes with the migrations.
	if _, err := store.Migrate(ctx); err != nil {
		return fail(fmt.Errorf("migrate: %v", err))
	}
	if t, err = store.CaptureAdd(ctx, t); err != nil {
		return fail(errors.New(audit.ErrorMessage(err)))
	}
	key := strings.Join(t.Keys, ",")
	if key == "" {
		key = "none (resource_id stays empty)"
	}
	fmt.Fprintf(stdout, "capturing %s.%s: key %s; its changes are staged in np_nself_audit.np_audit_capture_changes and moved into the chain by the service\n",
		schema, table, key)
	return 0
}

var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$`)

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// parseInterspersed parses flags given before and after positional
// arguments, and returns the positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// defaultHookURL is the hook route as Hasura reaches the plugin in an
// nSelf stack (the compose service name and port).
const defaultHookURL = "http://nself-audit:3843/api/v1/hooks/hasura"

// captureHasura prints or applies the event triggers.
func captureHasura(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) (int, error) {
	fs := flag.NewFlagSet("capture hasura", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var tables listFlag
	fs.Var(&tables, "table", "a table to capture, schema.table (repeatable)")
	keys := fs.String("key", "", "the key columns, comma-separated (default: id)")
	hookURL := fs.String("webhook-url", "", "the hook route as Hasura reaches it")
	secretEnv := fs.String("secret-env", "PLUGIN_INTERNAL_SECRET", "Hasura's environment variable holding the plugin token")
	source := fs.String("source", "default", "Hasura's database source of the --table tables")
	apply := fs.Bool("apply", false, "send the request to Hasura's metadata API")
	positional, err := parseInterspersed(fs, args)
	if err != nil {
		return 2, err
	}
	if len(positional) > 0 {
		return 2, fmt.Errorf("unexpected argument %q (name tables with --table)", positional[0])
	}
	opt := capture.TriggerOptions{WebhookURL: *hookURL, SecretEnv: *secretEnv}
	if opt.WebhookURL == "" {
		if opt.WebhookURL = getenv("NSELF_AUDIT_HOOK_URL"); opt.WebhookURL == "" {
			opt.WebhookURL = defaultHookURL
		}
	}
	if !regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`).MatchString(opt.SecretEnv) {
		return 2, fmt.Errorf("--secret-env %q: want an environment variable name", opt.SecretEnv)
	}
	if *keys != "" {
		for _, k := range strings.Split(*keys, ",") {
			if k = strings.TrimSpace(k); k == "" {
				return 2, errors.New("--key: want column names separated by commas")
			}
			opt.KeyColumns = append(opt.KeyColumns, k)
		}
	}
	hasura := hasuraClient{endpoint: getenv("HASURA_GRAPHQL_ENDPOINT"), secret: getenv("HASURA_GRAPHQL_ADMIN_SECRET")}
	var list []capture.HasuraTable
	for _, name := range tables {
		schema, table, err := capture.ParseTableName(name)
		if err != nil {
			return 2, fmt.Errorf("--table %v", err)
		}
		list = append(list, capture.HasuraTable{Source: *source, Schema: schema, Name: table})
	}
	if len(list) == 0 {
		if err := hasura.check("without --table, reading the tables Hasura tracks"); err != nil {
			return 1, err
		}
		exported, err := hasura.metadata(ctx, capture.MetadataRequest{Type: "export_metadata", Args: map[string]any{}})
		if err != nil {
			return 1, fmt.Errorf("export_metadata: %v", err)
		}
		if list, err = capture.TrackedTables(exported); err != nil {
			return 1, err
		}
		if len(list) == 0 {
			return 1, errors.New("Hasura tracks no table outside np_nself_audit and its catalogs: nothing to capture")
		}
	}
	req, err := capture.CreateTriggers(list, opt)
	if err != nil {
		return 1, err
	}
	if !*apply {
		out, _ := json.MarshalIndent(req, "", "  ")
		fmt.Fprintf(stdout, "%s\n", out)
		return 0, nil
	}
	if err := hasura.check("--apply"); err != nil {
		return 1, err
	}
	if _, err := hasura.metadata(ctx, *req); err != nil {
		return 1, err
	}
	for _, t := range list {
		fmt.Fprintf(stdout, "event trigger %s on %s.%s (source %s) sends its changes to %s\n",
			capture.TriggerName(t.Schema, t.Name), t.Schema, t.Name, orDefault(t.Source, "default"), opt.WebhookURL)
	}
	return 0, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// hasuraClient calls Hasura's metadata API with the admin secret.
type hasuraClient struct{ endpoint, secret string }

func (h hasuraClient) check(what string) error {
	if h.endpoint == "" || h.secret == "" {
		return fmt.Errorf("%s needs HASURA_GRAPHQL_ENDPOINT (Hasura's URL, such as http://hasura:8080) and HASURA_GRAPHQL_ADMIN_SECRET", what)
	}
	return nil
}

// metadata posts one request to <endpoint>/v1/metadata and returns the
// answer's body; an answer other than 200 is an error that quotes it.
func (h hasuraClient) metadata(ctx context.Context, req capture.MetadataRequest) ([]byte, error) {
	base := strings.TrimSuffix(strings.TrimRight(h.endpoint, "/"), "/v1/graphql")
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/metadata", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("HASURA_GRAPHQL_ENDPOINT: %v", err)
	}
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-Hasura-Admin-Secret", h.secret)
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		return nil, fmt.Errorf("Hasura did not answer: %v", err)
	}
	defer res.Body.Close()
	out, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("reading Hasura's answer: %v", err)
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("Hasura answered %s: %s", res.Status, truncateOutput(out))
	}
	return out, nil
}

func truncateOutput(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = s[:2000] + "…"
	}
	return s
}
