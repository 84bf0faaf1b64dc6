package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nself-org/nself-audit/internal/audit"
	"github.com/nself-org/nself-audit/internal/auth"
	"github.com/nself-org/nself-audit/internal/httpapi"
	"github.com/nself-org/nself-audit/internal/pgtest"
	"github.com/nself-org/nself-audit/internal/storetest"
)

// withStream shortens the live tail's timings for a test.
func withStream(c httpapi.StreamConfig) option {
	return func(cfg *Config) { cfg.stream = c }
}

// sseFrame is one frame of an event stream, as the client parsed it.
type sseFrame struct {
	comment         string // the comment line of a heartbeat
	id, event, data string
	bad             []string // lines that are no part of the contract
}

// sseStream is an open GET /api/v1/events/stream.
type sseStream struct {
	t      *testing.T
	header http.Header
	frames chan sseFrame // closed when the stream ends
	cancel context.CancelFunc
}

// openStream opens the stream at path (query included) with headers. On a
// status other than 200 it returns the decoded answer instead.
func (s *service) openStream(t *testing.T, path string, headers map[string]string) (*sseStream, *response) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", s.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		defer cancel()
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		r := &response{status: res.StatusCode, header: res.Header, raw: raw}
		if err := json.Unmarshal(raw, &r.body); err != nil || !strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
			t.Fatalf("GET %s: %d with a body that is not JSON: %s", path, res.StatusCode, raw)
		}
		return nil, r
	}
	st := &sseStream{t: t, header: res.Header, frames: make(chan sseFrame, 10000), cancel: cancel}
	t.Cleanup(st.close)
	go func() {
		defer close(st.frames)
		defer res.Body.Close()
		br := bufio.NewReader(res.Body)
		var f sseFrame
		lines := 0
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "":
				if lines > 0 {
					st.frames <- f
				}
				f, lines = sseFrame{}, 0
				continue
			case strings.HasPrefix(line, ":") && lines == 0:
				f.comment = line
			case strings.HasPrefix(line, "id: ") && lines == 0:
				f.id = line[4:]
			case strings.HasPrefix(line, "event: ") && lines == 1:
				f.event = line[7:]
			case strings.HasPrefix(line, "data: ") && lines == 2:
				f.data = line[6:]
			default:
				f.bad = append(f.bad, line)
			}
			lines++
		}
	}()
	return st, nil
}

func (st *sseStream) close() { st.cancel() }

// next returns the next frame, heartbeats included; ok is false when the
// stream ended. It fails the test after timeout.
func (st *sseStream) next(timeout time.Duration) (f sseFrame, ok bool) {
	st.t.Helper()
	select {
	case f, ok = <-st.frames:
		return f, ok
	case <-time.After(timeout):
		st.t.Fatalf("no frame within %v", timeout)
		return sseFrame{}, false
	}
}

// nextEvent returns the next event frame's seq and event, skipping
// heartbeats, and fails the test on a frame that breaks the contract.
func (st *sseStream) nextEvent(timeout time.Duration) (int64, map[string]any) {
	st.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f, ok := st.next(time.Until(deadline))
		if !ok {
			st.t.Fatal("the stream ended")
		}
		if f.comment != "" && f.id == "" && f.event == "" && f.data == "" && len(f.bad) == 0 {
			if f.comment != ": heartbeat" {
				st.t.Fatalf("comment frame %q", f.comment)
			}
			continue
		}
		seq, err := strconv.ParseInt(f.id, 10, 64)
		var e map[string]any
		if err != nil || f.event != "event" || f.comment != "" || len(f.bad) > 0 || json.Unmarshal([]byte(f.data), &e) != nil {
			st.t.Fatalf("frame breaks the contract: %+v", f)
		}
		if e["seq"] != float64(seq) {
			st.t.Fatalf("frame id %d names another seq than its event's: %s", seq, f.data)
		}
		return seq, e
	}
}

// quiet fails the test if an event frame comes within d.
func (st *sseStream) quiet(d time.Duration) {
	st.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case f, ok := <-st.frames:
			if !ok {
				st.t.Fatal("the stream ended")
			}
			if f.comment == "" {
				st.t.Fatalf("unexpected frame %+v", f)
			}
		case <-deadline:
			return
		}
	}
}

// TestStreamLive: events committed after the stream opened arrive in seq
// order, as GET /api/v1/events/{id} returns them, at once (the commit wakes
// the stream: the fallback poll is off here), and only the account's.
func TestStreamLive(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store, withStream(httpapi.StreamConfig{Poll: time.Hour}))
		s.post("acme", `{"actor_id":"u1","action":"doc.read"}`)
		s.post("acme", `{"actor_id":"u1","action":"doc.read"}`)
		st, r := s.openStream(t, "/api/v1/events/stream", pluginHeaders("acme"))
		if r != nil {
			t.Fatalf("stream: %d %s", r.status, r.raw)
		}
		for k, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"} {
			if got := st.header.Get(k); got != want {
				t.Errorf("%s: %q, want %q", k, got, want)
			}
		}
		var ids []string
		for i := 0; i < 5; i++ {
			ids = append(ids, s.post("acme", fmt.Sprintf(`{"actor_id":"u%d","action":"doc.write","metadata":{"i":%d,"s":"a\nb <&> \u2028 é"}}`, i, i))["id"].(string))
			s.post("globex", `{"actor_id":"u1","action":"doc.read"}`)
		}
		for i, id := range ids {
			seq, e := st.nextEvent(5 * time.Second)
			if seq != int64(3+i) || e["id"] != id {
				t.Fatalf("event %d: seq %d id %v; want seq %d id %s", i, seq, e["id"], 3+i, id)
			}
		}
		// Byte for byte the event of GET /api/v1/events/{id}, on one line.
		byID := s.get("/api/v1/events/"+ids[0], pluginHeaders("acme")).raw
		st2, _ := s.openStream(t, "/api/v1/events/stream", map[string]string{"Authorization": "Bearer " + testSecret,
			"X-Source-Account-Id": "acme", "Last-Event-ID": "2"})
		f, _ := st2.next(5 * time.Second)
		if f.data+"\n" != string(byID) || f.id != "3" {
			t.Fatalf("frame data %q\nGET by id   %q", f.data, byID)
		}
		st.quiet(300 * time.Millisecond) // nothing of globex, nothing twice
	})
}

// TestStreamResume: Last-Event-ID (or last_event_id) N sends exactly the
// events after N, then live ones. Reconnecting again and again while
// events are written, the union of what arrived is the chain: nothing
// lost, nothing twice, always in seq order.
func TestStreamResume(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store, withStream(httpapi.StreamConfig{Page: 4, Span: 7}))
		postN(s, "acme", 10)
		for _, c := range []struct {
			path    string
			headers map[string]string
			first   int64
		}{
			{"/api/v1/events/stream", map[string]string{"Last-Event-ID": "4"}, 5},
			{"/api/v1/events/stream?last_event_id=8", nil, 9},
			{"/api/v1/events/stream?last_event_id=0", nil, 1},
			{"/api/v1/events/stream", map[string]string{"Last-Event-ID": "10"}, 11},
			{"/api/v1/events/stream", map[string]string{"Last-Event-ID": "0010"}, 11},
		} {
			h := pluginHeaders("acme")
			for k, v := range c.headers {
				h[k] = v
			}
			st, r := s.openStream(t, c.path, h)
			if r != nil {
				t.Fatalf("%s %v: %d %s", c.path, c.headers, r.status, r.raw)
			}
			for want := c.first; want <= 10; want++ {
				if seq, _ := st.nextEvent(5 * time.Second); seq != want {
					t.Fatalf("%s %v: seq %d, want %d", c.path, c.headers, seq, want)
				}
			}
			st.close()
		}
		// A position past the head waits for the chain to get there.
		ahead, _ := s.openStream(t, "/api/v1/events/stream?last_event_id=11", pluginHeaders("acme"))

		// Reconnect while two writers post.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < 2; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 1000; i++ {
					select {
					case <-stop:
						return
					case <-time.After(2 * time.Millisecond):
					}
					if r := s.do("POST", "/api/v1/events", pluginHeaders("acme"), `{"actor_id":"w","action":"doc.write"}`); r.status != 201 {
						t.Errorf("post: %d %s", r.status, r.raw)
						return
					}
				}
			}()
		}
		var got []int64
		last := int64(10)
		for conn := 0; conn < 6; conn++ {
			st, r := s.openStream(t, "/api/v1/events/stream", map[string]string{"Authorization": "Bearer " + testSecret,
				"X-Source-Account-Id": "acme", "Last-Event-ID": strconv.FormatInt(last, 10)})
			if r != nil {
				t.Fatalf("reconnect: %d %s", r.status, r.raw)
			}
			for i := 0; i < 3+4*conn; i++ {
				seq, _ := st.nextEvent(10 * time.Second)
				got = append(got, seq)
				last = seq
			}
			st.close()
		}
		close(stop)
		wg.Wait()
		head := storeHead(t, s, "acme")
		st, _ := s.openStream(t, "/api/v1/events/stream", map[string]string{"Authorization": "Bearer " + testSecret,
			"X-Source-Account-Id": "acme", "Last-Event-ID": strconv.FormatInt(last, 10)})
		for last < head {
			last, _ = st.nextEvent(10 * time.Second)
			got = append(got, last)
		}
		for i, seq := range got {
			if seq != int64(11+i) {
				t.Fatalf("received seqs %v: position %d is %d, want %d", got, i, seq, 11+i)
			}
		}
		if seq, _ := ahead.nextEvent(5 * time.Second); seq != 12 {
			t.Fatalf("stream from 11 starts at %d, want 12", seq)
		}
		st.quiet(200 * time.Millisecond)
	})
}

// storeHead returns the account's chain head seq through the service's store.
func storeHead(t *testing.T, s *service, account string) int64 {
	t.Helper()
	seq, _, err := s.main.store.Head(context.Background(), audit.Scope{AccountID: account})
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// TestStreamFilters: the list filters apply, to catch-up and live events.
func TestStreamFilters(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		// Tiny queries: full pages and seq spans without a match are walked.
		s := start(t, store, withStream(httpapi.StreamConfig{Page: 1, Span: 2}))
		events := []string{
			`{"actor_id":"alice","action":"user.login"}`,                           // 1 match
			`{"actor_id":"alice","action":"user.login","outcome":"failure"}`,       // 2
			`{"actor_id":"bob","action":"user.logout"}`,                            // 3 match
			`{"actor_id":"bob","action":"users.list"}`,                             // 4
			`{"actor_id":"carol","action":"doc.read","resource_type":"doc"}`,       // 5
			`{"actor_id":"alice","action":"user.mfa.enable","severity":"warning"}`, // 6 match
		}
		for _, e := range events {
			s.post("acme", e)
		}
		st, r := s.openStream(t, "/api/v1/events/stream?action=user.*&outcome=success&last_event_id=0", pluginHeaders("acme"))
		if r != nil {
			t.Fatalf("%d %s", r.status, r.raw)
		}
		for _, e := range events {
			s.post("acme", e) // 7..12; 7, 9 and 12 match
		}
		s.post("globex", events[0])
		for _, want := range []int64{1, 3, 6, 7, 9, 12} {
			if seq, e := st.nextEvent(5 * time.Second); seq != want || !strings.HasPrefix(e["action"].(string), "user.") {
				t.Fatalf("seq %d %v, want %d", seq, e, want)
			}
		}
		st.quiet(300 * time.Millisecond)
		// More filters at once, and a filter that matches nothing yet.
		st, _ = s.openStream(t, "/api/v1/events/stream?actor_id=alice&severity=warning&since=2000-01-01T00:00:00Z&last_event_id=0", pluginHeaders("acme"))
		for _, want := range []int64{6, 12} {
			if seq, _ := st.nextEvent(5 * time.Second); seq != want {
				t.Fatalf("seq %d, want %d", seq, want)
			}
		}
		st, _ = s.openStream(t, "/api/v1/events/stream?resource_type=invoice&actor_type=service&source=billing", pluginHeaders("acme"))
		s.post("acme", `{"actor_id":"svc","actor_type":"service","action":"invoice.send","resource_type":"invoice"}`)
		s.post("acme", `{"actor_id":"svc","actor_type":"service","action":"invoice.send","resource_type":"invoice","source":"billing"}`)
		if seq, _ := st.nextEvent(5 * time.Second); seq != 14 {
			t.Fatalf("seq %d, want 14", seq)
		}
	})
}

// TestStreamRoles: a non-admin JWT sees only its own actor's events of its
// account, whatever it asks; an admin JWT the whole account.
func TestStreamRoles(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store, withJWT(`{"type":"HS256","key":"`+hsKey+`"}`), withStream(httpapi.StreamConfig{Heartbeat: 200 * time.Millisecond}))
		s.post("acme", `{"actor_id":"alice","action":"doc.read"}`)   // 1
		s.post("acme", `{"actor_id":"bob","action":"doc.read"}`)     // 2
		s.post("globex", `{"actor_id":"alice","action":"doc.read"}`) // globex 1
		alice := bearer(hsToken(t, claims{user: "alice", role: "user", account: "acme", allowed: []string{"user"}}))
		admin := bearer(hsToken(t, claims{user: "root", role: "admin", account: "acme", allowed: []string{"admin"}}))

		as := func(h map[string]string, path string) *sseStream {
			st, r := s.openStream(t, path, h)
			if r != nil {
				t.Fatalf("%s: %d %s", path, r.status, r.raw)
			}
			return st
		}
		aliceAll := as(alice, "/api/v1/events/stream?last_event_id=0")
		aliceBob := as(alice, "/api/v1/events/stream?last_event_id=0&actor_id=bob")
		adminAll := as(admin, "/api/v1/events/stream?last_event_id=0")
		s.post("acme", `{"actor_id":"bob","action":"doc.write"}`)   // 3
		s.post("acme", `{"actor_id":"alice","action":"doc.write"}`) // 4
		s.post("globex", `{"actor_id":"alice","action":"doc.write"}`)
		for _, want := range []int64{1, 4} {
			if seq, e := aliceAll.nextEvent(5 * time.Second); seq != want || e["actor_id"] != "alice" || e["source_account_id"] != "acme" {
				t.Fatalf("alice: seq %d %v, want %d", seq, e, want)
			}
		}
		for _, want := range []int64{1, 2, 3, 4} {
			if seq, _ := adminAll.nextEvent(5 * time.Second); seq != want {
				t.Fatalf("admin: seq %d, want %d", seq, want)
			}
		}
		// Bob's events are not alice's to see, filter or not: the first
		// frames are heartbeats (catch-up comes before any).
		aliceBob.quiet(500 * time.Millisecond)
		aliceAll.quiet(300 * time.Millisecond)
	})
}

// TestStreamBadRequests: bad parameters and both resume forms at once are
// 400 JSON errors naming the problem, before any stream starts.
func TestStreamBadRequests(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		cases := []struct {
			query  string
			header string // Last-Event-ID
			want   string
		}{
			{"limit=5", "", "limit: not taken by the stream"},
			{"sort=asc", "", "sort: not taken"},
			{"cursor=abc", "", "cursor: not taken"},
			{"colour=red", "", "colour: unknown query parameter"},
			{"actor_type=robot", "", "actor_type: must be one of"},
			{"action=user*", "", "action"},
			{"since=yesterday", "", "since"},
			{"actor_id=a&actor_id=b", "", "actor_id: given more than once"},
			{"last_event_id=abc", "", "last_event_id: must be"},
			{"last_event_id=-1", "", "last_event_id: must be"},
			{"last_event_id=+1", "", "last_event_id: must be"},
			{"last_event_id=", "", "last_event_id: must be"},
			{"last_event_id=99999999999999999999", "", "last_event_id: must be"},
			{"last_event_id=1&last_event_id=2", "", "last_event_id: given more than once"},
			{"", "x", "Last-Event-ID: must be"},
			{"", "1.5", "Last-Event-ID: must be"},
			{"", "0x10", "Last-Event-ID: must be"},
			{"last_event_id=3", "3", "not both"},
		}
		for _, c := range cases {
			h := pluginHeaders("acme")
			if c.header != "" {
				h["Last-Event-ID"] = c.header
			}
			st, r := s.openStream(t, "/api/v1/events/stream?"+c.query, h)
			if st != nil {
				t.Errorf("%q %q: the stream started", c.query, c.header)
				continue
			}
			if r.status != 400 || r.errorCode() != "invalid_request" || !strings.Contains(r.errorMessage(), c.want) {
				t.Errorf("%q %q: %d %s; want 400 naming %q", c.query, c.header, r.status, r.raw, c.want)
			}
		}
		if _, r := s.openStream(t, "/api/v1/events/stream", nil); r == nil || r.status != 401 {
			t.Errorf("no credentials: %+v", r)
		}
	})
}

// TestStreamHeartbeat: a heartbeat comment comes every interval while no
// event does.
func TestStreamHeartbeat(t *testing.T) {
	t.Parallel()
	s := start(t, "sqlite", withStream(httpapi.StreamConfig{Heartbeat: 100 * time.Millisecond}))
	st, _ := s.openStream(t, "/api/v1/events/stream", pluginHeaders(""))
	start := time.Now()
	for i := 0; i < 3; i++ {
		f, ok := st.next(5 * time.Second)
		if !ok || f.comment != ": heartbeat" || f.id != "" || f.event != "" || f.data != "" || len(f.bad) > 0 {
			t.Fatalf("frame %d: %+v, want a heartbeat", i, f)
		}
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("three heartbeats in %v: more often than every 100 ms", d)
	}
}

// TestStreamLimitAndClientGone: streams beyond the cap are refused with
// 503 and Retry-After; a stream whose client left frees its place.
func TestStreamLimitAndClientGone(t *testing.T) {
	t.Parallel()
	s := start(t, "sqlite", withStream(httpapi.StreamConfig{Max: 2}))
	a, _ := s.openStream(t, "/api/v1/events/stream", pluginHeaders("acme"))
	b, _ := s.openStream(t, "/api/v1/events/stream", pluginHeaders("globex"))
	st, r := s.openStream(t, "/api/v1/events/stream", pluginHeaders("acme"))
	if st != nil || r.status != 503 || r.header.Get("Retry-After") == "" || r.errorCode() != "unavailable" {
		t.Fatalf("third stream: %+v", r)
	}
	a.close()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, r := s.openStream(t, "/api/v1/events/stream", pluginHeaders("acme"))
		if st != nil {
			break
		}
		if r.status != 503 || time.Now().After(deadline) {
			t.Fatalf("the place of a closed stream is not freed: %d %s", r.status, r.raw)
		}
	}
	s.post("globex", `{"actor_id":"u","action":"doc.read"}`)
	if seq, _ := b.nextEvent(5 * time.Second); seq != 1 {
		t.Fatalf("the other stream goes on: seq %d", seq)
	}
}

// TestStreamShutdown: closing the service with open streams ends them
// and returns promptly, well within the shutdown timeout.
func TestStreamShutdown(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		var streams []*sseStream
		for i := 0; i < 3; i++ {
			st, _ := s.openStream(t, "/api/v1/events/stream", pluginHeaders("acme"))
			streams = append(streams, st)
		}
		s.post("acme", `{"actor_id":"u","action":"doc.read"}`)
		streams[0].nextEvent(5 * time.Second)
		begin := time.Now()
		if err := s.main.Close(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(begin); d > 5*time.Second { // without CloseStreams it is the 20 s shutdown timeout
			t.Fatalf("Close took %v with open streams", d)
		}
		// Every stream ends; streams 1 and 2 may still hold event 1.
		for i, st := range streams {
			for {
				f, ok := st.next(5 * time.Second)
				if !ok {
					break
				}
				if i == 0 || f.id != "1" {
					t.Fatalf("stream %d: frame %+v after shutdown", i, f)
				}
			}
		}
	})
}

// TestStreamOtherProcess: an event written by another process on the same
// PostgreSQL database reaches the stream through the fallback poll.
func TestStreamOtherProcess(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.Default.NewDatabase(t)
	other := startProcess(t, dbURL)
	s := startOn(t, dbURL, "")
	st, r := s.openStream(t, "/api/v1/events/stream", pluginHeaders("acme"))
	if r != nil {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	id := other.post("acme", `{"actor_id":"u","action":"doc.read"}`)["id"]
	begin := time.Now()
	if seq, e := st.nextEvent(5 * time.Second); seq != 1 || e["id"] != id {
		t.Fatalf("seq %d %v", seq, e)
	}
	if d := time.Since(begin); d > 4*time.Second { // the poll is every second; the machine may be busy
		t.Fatalf("the poll found the event after %v", d)
	}
	s.post("acme", `{"actor_id":"u","action":"doc.read"}`) // and our own at once
	if seq, _ := st.nextEvent(5 * time.Second); seq != 2 {
		t.Fatalf("seq %d", seq)
	}
}

// TestStreamOutlivesWriteTimeout: a stream lives past the server's write
// timeout, each write getting its own deadline.
func TestStreamOutlivesWriteTimeout(t *testing.T) {
	t.Parallel()
	s := start(t, "sqlite")
	m := s.main
	api := httpapi.New(httpapi.Config{Store: m.store, Writer: m.writer, Auth: auth.New(testSecret, nil, nil),
		Cursors: audit.NewCursorCodec([]byte(testSecret)), Signer: m.signer,
		Stream: httpapi.StreamConfig{Heartbeat: 100 * time.Millisecond}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: api.Handler(), WriteTimeout: 300 * time.Millisecond}
	go srv.Serve(ln)
	defer srv.Close()
	short := &service{t: t, url: "http://" + ln.Addr().String()}
	st, r := short.openStream(t, "/api/v1/events/stream", pluginHeaders(""))
	if r != nil {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	begin := time.Now()
	for time.Since(begin) < time.Second {
		if f, ok := st.next(2 * time.Second); !ok || f.comment != ": heartbeat" {
			t.Fatalf("after %v: %+v, %v", time.Since(begin), f, ok)
		}
	}
}

// TestStreamShutdownStuckClient: a stream blocked writing to a client that
// does not read ends at shutdown too, without waiting for its write window.
func TestStreamShutdownStuckClient(t *testing.T) {
	t.Parallel()
	s := start(t, "sqlite")
	// 200 events of 60 KiB (12 MiB), far more than the sockets buffer
	// (about 4 MiB on Linux), straight into the store: one canonicalized
	// metadata, many ids.
	const n = 200
	e := storetest.Event(t, audit.DefaultAccount, time.Time{}, `metadata={"pad":"`+strings.Repeat("x", 60<<10)+`"}`)
	var events []*audit.Event
	for i := 0; i < n; i++ {
		c := *e
		c.ID = uuid.Must(uuid.NewV7())
		events = append(events, &c)
	}
	storetest.AppendAll(t, s.main.store, events...)
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /api/v1/events/stream?last_event_id=0 HTTP/1.1\r\nHost: audit\r\nAuthorization: Bearer %s\r\n\r\n", testSecret)
	time.Sleep(time.Second) // the server fills the buffers and blocks; we read nothing
	begin := time.Now()
	if err := s.main.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Fatalf("Close took %v with a stream blocked on its client", d)
	}
	// The stream was cut short: it had been blocked, not done.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, _ := io.ReadAll(conn)
	if frames := bytes.Count(got, []byte("\nevent: event\n")); frames >= n {
		t.Fatalf("all %d events arrived: the socket buffers held them, and the test proved nothing", frames)
	}
}
