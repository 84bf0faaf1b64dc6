package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nself-org/nself-audit/client"
)

// sameJSON decodes raw (one JSON value as the service sent it) into a new
// value of out's type, refusing members the type lacks, re-encodes it as
// the client does, and fails unless the bytes are the same. It returns the
// decoded value.
func sameJSON[T any](t *testing.T, what string, raw []byte) T {
	t.Helper()
	raw = bytes.TrimSuffix(raw, []byte("\n"))
	var v T
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%s: the client's %T cannot hold the service's answer: %v\n%s", what, v, err, raw)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	if got := bytes.TrimSuffix(b.Bytes(), []byte("\n")); !bytes.Equal(got, raw) {
		t.Fatalf("%s: the client's %T re-encodes the answer differently:\nservice: %s\nclient:  %s", what, v, raw, got)
	}
	return v
}

// TestClientMatchesServerJSON: every typed answer of the client holds every
// member the service sends and encodes back to the service's exact bytes,
// and each method returns what the route answers, on both stores.
func TestClientMatchesServerJSON(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		ctx := context.Background()
		c := s.client("acme", client.WithSourcePlugin("nself-test"))
		h := pluginHeaders("acme")

		occurred := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.FixedZone("x", 3600))
		ev, err := c.PostEvent(ctx, client.NewEvent{
			ActorID: "user-42", Action: "invoice.paid", ResourceType: "invoice", ResourceID: "inv <1> & \"2\"",
			Outcome: "failure", Severity: "warning", OccurredAt: occurred, IPAddress: "::ffff:198.51.100.20",
			UserAgent: "ua/1 <x>", RequestID: "req-1",
			Metadata: json.RawMessage(`{"z":1,"a":{"n":2.50,"s":"café <b>&amp;</b>","l":[true,null]},"big":12345678901234567890}`),
		})
		if err != nil {
			t.Fatal(err)
		}
		if ev.Seq != 1 || ev.Source != "nself-test" || ev.IPAddress != "198.51.100.20" ||
			!ev.OccurredAt.Equal(occurred.Truncate(time.Microsecond)) || ev.SourceAccountID != "acme" {
			t.Fatalf("posted event: %+v", ev)
		}
		batch, err := c.PostBatch(ctx, []client.NewEvent{
			{ActorType: "system", Action: "backup.completed"},
			{ActorID: "user-7", Action: "user.login", Metadata: json.RawMessage(`{"mfa":true}`)},
		}, "")
		if err != nil || len(batch.Events) != 2 || batch.Replayed || batch.Events[1].Seq != 3 {
			t.Fatalf("batch: %+v %v", batch, err)
		}

		raw := s.get("/api/v1/events/"+ev.ID, h).raw
		got := sameJSON[client.Event](t, "GET /api/v1/events/{id}", raw)
		viaClient, err := c.GetEvent(ctx, ev.ID)
		if err != nil || !reflect.DeepEqual(*viaClient, got) || !reflect.DeepEqual(*ev, got) {
			t.Fatalf("GetEvent: %+v %v; want %+v", viaClient, err, got)
		}

		raw = s.get("/api/v1/events?sort=asc&limit=2", h).raw
		page := sameJSON[client.EventPage](t, "GET /api/v1/events", raw)
		cpage, err := c.ListEvents(ctx, client.ListOptions{Sort: "asc", Limit: 2})
		if err != nil || !reflect.DeepEqual(*cpage, page) || page.NextCursor == nil || len(page.Events) != 2 {
			t.Fatalf("ListEvents: %+v %v; want %+v", cpage, err, page)
		}
		raw = s.get("/api/v1/actors/user-7/events", h).raw
		apage := sameJSON[client.EventPage](t, "GET /api/v1/actors/{actor_id}/events", raw)
		capage, err := c.ActorEvents(ctx, "user-7", client.ListOptions{})
		if err != nil || !reflect.DeepEqual(*capage, apage) || len(apage.Events) != 1 || apage.NextCursor != nil {
			t.Fatalf("ActorEvents: %+v %v; want %+v", capage, err, apage)
		}

		for _, q := range []string{"", "?interval=hour&actor_type=user"} {
			raw = s.get("/api/v1/stats"+q, h).raw
			st := sameJSON[client.Stats](t, "GET /api/v1/stats"+q, raw)
			o := client.StatsOptions{}
			if q != "" {
				o = client.StatsOptions{Filter: client.Filter{ActorType: "user"}, Interval: "hour"}
			}
			cst, err := c.Stats(ctx, o)
			if err != nil || !reflect.DeepEqual(*cst, st) {
				t.Fatalf("Stats%s: %+v %v; want %+v", q, cst, err, st)
			}
		}
		empty := sameJSON[client.Stats](t, "GET /api/v1/stats (no events)", s.get("/api/v1/stats", pluginHeaders("nobody")).raw)
		if empty.Total != 0 || empty.FirstEventAt != nil {
			t.Fatalf("empty stats: %+v", empty)
		}

		raw = s.get("/api/v1/verify", h).raw
		vr := sameJSON[client.VerifyResult](t, "GET /api/v1/verify", raw)
		cvr, err := c.Verify(ctx, client.SeqRange{})
		if err != nil || !reflect.DeepEqual(*cvr, vr) || !vr.OK || vr.Checked != 3 {
			t.Fatalf("Verify: %+v %v; want %+v", cvr, err, vr)
		}

		cp, created, err := c.CreateCheckpoint(ctx)
		if err != nil || !created || cp.Seq != 3 {
			t.Fatalf("CreateCheckpoint: %+v %v %v", cp, created, err)
		}
		if again, created, err := c.CreateCheckpoint(ctx); err != nil || created || !reflect.DeepEqual(again, cp) {
			t.Fatalf("CreateCheckpoint again: %+v %v %v", again, created, err)
		}
		raw = s.get("/api/v1/checkpoints/latest", h).raw
		latest := sameJSON[client.Checkpoint](t, "GET /api/v1/checkpoints/latest", raw)
		clatest, err := c.LatestCheckpoint(ctx)
		if err != nil || !reflect.DeepEqual(*clatest, latest) || !reflect.DeepEqual(latest, *cp) {
			t.Fatalf("LatestCheckpoint: %+v %v; want %+v", clatest, err, latest)
		}
		raw = s.get("/api/v1/checkpoints", h).raw
		list := sameJSON[client.CheckpointList](t, "GET /api/v1/checkpoints", raw)
		clist, err := c.Checkpoints(ctx, client.CheckpointOptions{})
		if err != nil || !reflect.DeepEqual(clist, list.Checkpoints) || len(clist) != 1 {
			t.Fatalf("Checkpoints: %+v %v; want %+v", clist, err, list)
		}
		raw = s.get("/api/v1/public-key", h).raw
		pk := sameJSON[client.PublicKey](t, "GET /api/v1/public-key", raw)
		cpk, err := c.PublicKey(ctx)
		if err != nil || *cpk != pk || pk.Algorithm != "ed25519" {
			t.Fatalf("PublicKey: %+v %v; want %+v", cpk, err, pk)
		}

		for _, path := range []string{"/health", "/ready"} {
			raw = s.get(path, nil).raw
			hl := sameJSON[client.Health](t, "GET "+path, raw)
			get := c.Health
			if path == "/ready" {
				get = c.Ready
			}
			if chl, err := get(ctx); err != nil || *chl != hl || hl.Migrations.Applied == 0 || hl.Migrations.Applied != hl.Migrations.Expected {
				t.Fatalf("%s: %+v %v; want %+v", path, chl, err, hl)
			}
		}
		raw = s.get("/auth/verify", h).raw
		who := sameJSON[client.Principal](t, "GET /auth/verify", raw)
		if cwho, err := c.Principal(ctx); err != nil || *cwho != who || who.AccountID != "acme" || who.Kind != "plugin" {
			t.Fatalf("Principal: %+v %v; want %+v", cwho, err, who)
		}

		// The batch answer, and the export's lines.
		r := s.do("POST", "/api/v1/events/batch", h, `{"events":[{"actor_id":"u","action":"a.b","metadata":{"k":"<&>"}}]}`)
		if r.status != 201 {
			t.Fatalf("batch: %d %s", r.status, r.raw)
		}
		sameJSON[client.Batch](t, "POST /api/v1/events/batch", r.raw)
		raw = s.get("/api/v1/events/export", h).raw
		var exported bytes.Buffer
		n, err := c.Export(ctx, &exported, client.ExportOptions{})
		if err != nil || n != int64(len(raw)) || !bytes.Equal(exported.Bytes(), raw) {
			t.Fatalf("Export: %d %v; differs from the route's %d bytes", n, err, len(raw))
		}
		lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
		if len(lines) != 4 {
			t.Fatalf("export holds %d lines, want 4", len(lines))
		}
		for i, line := range lines {
			sameJSON[client.Event](t, fmt.Sprintf("export line %d", i+1), []byte(line))
		}
		exported.Reset()
		if _, err := c.Export(ctx, &exported, client.ExportOptions{SeqRange: client.SeqRange{FromSeq: 2, ToSeq: 3}}); err != nil ||
			exported.String() != lines[1]+"\n"+lines[2]+"\n" {
			t.Fatalf("Export 2..3: %v\n%s", err, exported.String())
		}
	})
}

// TestClientPagingAndErrors: the iterator follows every cursor; non-2xx
// answers are *client.Error values carrying the body's code and request
// id, and a 4xx is sent once.
func TestClientPagingAndErrors(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		ctx := context.Background()
		counter := &countingProxy{target: s.url}
		srv := httptest.NewServer(counter)
		defer srv.Close()
		c, err := client.New(srv.URL, testSecret, client.WithAccount("pages"))
		if err != nil {
			t.Fatal(err)
		}
		var events []client.NewEvent
		for i := range 7 {
			events = append(events, client.NewEvent{ActorID: fmt.Sprintf("user-%d", i%2), Action: "doc.read", ResourceID: fmt.Sprint(i)})
		}
		if _, err := c.PostBatch(ctx, events, "pages-1"); err != nil {
			t.Fatal(err)
		}
		var seqs []int64
		before := counter.requests.Load()
		for e, err := range c.AllEvents(ctx, client.ListOptions{Sort: "asc", Limit: 3}) {
			if err != nil {
				t.Fatal(err)
			}
			seqs = append(seqs, e.Seq)
		}
		if fmt.Sprint(seqs) != "[1 2 3 4 5 6 7]" || counter.requests.Load()-before != 3 {
			t.Fatalf("AllEvents: seqs %v in %d requests; want 1..7 in 3 pages", seqs, counter.requests.Load()-before)
		}
		seqs = nil
		for e, err := range c.AllActorEvents(ctx, "user-1", client.ListOptions{Sort: "asc", Limit: 2}) {
			if err != nil {
				t.Fatal(err)
			}
			seqs = append(seqs, e.Seq)
		}
		if fmt.Sprint(seqs) != "[2 4 6]" {
			t.Fatalf("AllActorEvents: %v", seqs)
		}
		// Stopping early issues no further page.
		before = counter.requests.Load()
		for range c.AllEvents(ctx, client.ListOptions{Limit: 1}) {
			break
		}
		if n := counter.requests.Load() - before; n != 1 {
			t.Fatalf("breaking out of AllEvents after one event sent %d requests", n)
		}

		check := func(what string, err error, status int, code, msg string) {
			t.Helper()
			var e *client.Error
			if !errors.As(err, &e) || e.StatusCode != status || e.Code != code || !strings.Contains(e.Message, msg) || e.RequestID == "" {
				t.Fatalf("%s: %#v (%v); want %d %s %q with a request id", what, e, err, status, code, msg)
			}
		}
		before = counter.requests.Load()
		_, err = c.PostEvent(ctx, client.NewEvent{ActorID: "u1"})
		check("no action", err, 400, client.CodeInvalidRequest, "action: required")
		_, err = c.ListEvents(ctx, client.ListOptions{Sort: "newest"})
		check("bad sort", err, 400, client.CodeInvalidRequest, "sort: must be asc or desc")
		_, err = c.GetEvent(ctx, "01a21bcd-665b-7bac-8321-d638196fef0f")
		check("unknown id", err, 404, client.CodeNotFound, "not found")
		_, err = c.PostEvent(ctx, client.NewEvent{ActorID: "u1", Action: "a.b", IdempotencyKey: "k-1"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.PostEvent(ctx, client.NewEvent{ActorID: "u1", Action: "a.c", IdempotencyKey: "k-1"})
		check("key reused", err, 409, client.CodeConflict, "different event")
		_, err = c.PostBatch(ctx, events[:2], "pages-1")
		check("batch key reused", err, 409, client.CodeConflict, "different batch")
		if replay, err := c.PostBatch(ctx, events, "pages-1"); err != nil || !replay.Replayed || len(replay.Events) != 7 || replay.Events[6].Seq != 7 {
			t.Fatalf("batch replay: %+v %v", replay, err)
		}
		bad, _ := client.New(srv.URL, "wrong-token-0123456789")
		_, err = bad.Stats(ctx, client.StatsOptions{})
		check("wrong token", err, 401, client.CodeUnauthorized, "invalid token")
		if n := counter.requests.Load() - before; n != 8 {
			t.Fatalf("%d requests for 8 calls: a 4xx was retried", n)
		}
		if _, err := client.New("ftp://x", testSecret); err == nil {
			t.Fatal("New accepted an ftp URL")
		}
		if _, err := client.New(s.url, ""); err == nil {
			t.Fatal("New accepted an empty token")
		}
		if _, err := c.PostBatch(ctx, []client.NewEvent{{Action: "a.b", ActorID: "u", IdempotencyKey: "x"}}, ""); err == nil {
			t.Fatal("PostBatch accepted a key on an event")
		}
	})
}

// countingProxy forwards to target and counts requests.
type countingProxy struct {
	target   string
	requests atomic.Int64
	once     sync.Once
	rp       *httputil.ReverseProxy
}

func (p *countingProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.once.Do(func() {
		u, _ := url.Parse(p.target)
		p.rp = httputil.NewSingleHostReverseProxy(u)
		p.rp.FlushInterval = -1
	})
	p.requests.Add(1)
	p.rp.ServeHTTP(w, r)
}

// TestClientRetries: a POST answered 503 with Retry-After is sent again
// after the wait it asked for, with the same Idempotency-Key, and one whose
// answer is lost after the service stored the event is sent again and
// answered from the first event: either way the event is stored exactly
// once. A context ends the waiting.
func TestClientRetries(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		ctx := context.Background()
		target, _ := url.Parse(s.url)
		forward := httputil.NewSingleHostReverseProxy(target)

		var mu sync.Mutex
		var keys []string
		unavailable, drop := 0, 0 // answer 503 this many times; forward then drop the answer this many times
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			if r.Method == "POST" {
				keys = append(keys, r.Header.Get("Idempotency-Key"))
			}
			u, d := unavailable > 0, drop > 0 && unavailable == 0
			if u {
				unavailable--
			} else if d {
				drop--
			}
			mu.Unlock()
			switch {
			case u:
				w.Header().Set("Retry-After", "1")
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(503)
				io.WriteString(w, `{"error":{"code":"unavailable","message":"the database does not answer; retry later","request_id":"proxy"}}`)
			case d:
				rec := httptest.NewRecorder()
				forward.ServeHTTP(rec, r) // the service stores the event...
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					conn.Close() // ...and its answer is lost
				}
			default:
				forward.ServeHTTP(w, r)
			}
		}))
		defer srv.Close()
		c, err := client.New(srv.URL, testSecret, client.WithAccount("retry"), client.WithBackoff(10*time.Millisecond, 50*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}

		unavailable = 2
		began := time.Now()
		ev, err := c.PostEvent(ctx, client.NewEvent{ActorID: "u1", Action: "retry.unavailable"})
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(began); took < 2*time.Second {
			t.Fatalf("two 503s with Retry-After: 1 were retried after %s", took)
		}
		if len(keys) != 3 || keys[0] == "" || keys[0] != keys[1] || keys[1] != keys[2] {
			t.Fatalf("Idempotency-Keys sent: %q; want one key three times", keys)
		}

		keys, drop = nil, 1
		batch, err := c.PostBatch(ctx, []client.NewEvent{{ActorID: "u1", Action: "retry.lost"}, {ActorID: "u2", Action: "retry.lost"}}, "")
		if err != nil || !batch.Replayed || batch.Events[0].Seq != 2 {
			t.Fatalf("batch after a lost answer: %+v %v; want the replay of seq 2 and 3", batch, err)
		}
		keys, drop = nil, 1
		ev2, err := c.PostEvent(ctx, client.NewEvent{ActorID: "u1", Action: "retry.lost"})
		if err != nil || ev2.Seq != 4 || len(keys) != 2 || keys[0] != keys[1] {
			t.Fatalf("single after a lost answer: %+v %v, keys %q", ev2, err, keys)
		}
		page := s.get("/api/v1/events?sort=asc", pluginHeaders("retry"))
		var got []string
		for _, e := range page.events() {
			got = append(got, e["action"].(string))
		}
		if want := "[retry.unavailable retry.lost retry.lost retry.lost]"; fmt.Sprint(got) != want || page.events()[0]["id"] != ev.ID {
			t.Fatalf("stored %v; want %s, each once", got, want)
		}
		if n := verifyChains(t, s.main.store, "retry")["retry"]; n != 4 {
			t.Fatalf("chain holds %d events", n)
		}

		// A 503 that lasts: the retries end (4 by default), with the 503.
		mu.Lock()
		unavailable = 100
		mu.Unlock()
		fast, _ := client.New(srv.URL, testSecret, client.WithBackoff(time.Millisecond, time.Millisecond), client.WithRetries(2))
		// Retry-After: 1 is honoured: 2 retries take 2 s.
		_, err = fast.Stats(ctx, client.StatsOptions{})
		var apiErr *client.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 503 || apiErr.Code != client.CodeUnavailable || apiErr.RetryAfter != time.Second {
			t.Fatalf("lasting 503: %v", err)
		}
		// The context bounds the wait.
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		began = time.Now()
		if _, err := c.Stats(short, client.StatsOptions{}); !errors.Is(err, context.DeadlineExceeded) || time.Since(began) > 900*time.Millisecond {
			t.Fatalf("ctx deadline during retries: %v after %s", err, time.Since(began))
		}
		// A refused connection is retried too, and then reported.
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := ln.Addr().String()
		ln.Close()
		dead, _ := client.New("http://"+addr, testSecret, client.WithBackoff(time.Millisecond, time.Millisecond), client.WithRetries(1))
		if _, err := dead.Stats(ctx, client.StatsOptions{}); err == nil || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("closed port: %v", err)
		}
	})
}

// readNDJSON decodes each line of raw into a client.Event.
func readNDJSON(t *testing.T, raw []byte) []client.Event {
	t.Helper()
	var out []client.Event
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(nil, maxLine)
	for sc.Scan() {
		var e client.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("%v: %s", err, sc.Bytes())
		}
		out = append(out, e)
	}
	return out
}
