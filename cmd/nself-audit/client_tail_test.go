package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nself-org/nself-audit/client"
)

// tailInto runs c.Tail in the background and returns its events and its
// end.
func tailInto(ctx context.Context, c *client.Client, o client.TailOptions) (<-chan *client.Event, <-chan error) {
	events, done := make(chan *client.Event, 100), make(chan error, 1)
	go func() {
		done <- c.Tail(ctx, o, func(e *client.Event) error {
			events <- e
			return nil
		})
	}()
	return events, done
}

// expectSeqs reads len(want) events and fails unless they have these seqs.
func expectSeqs(t *testing.T, events <-chan *client.Event, want ...int64) []*client.Event {
	t.Helper()
	var got []*client.Event
	for _, seq := range want {
		select {
		case e := <-events:
			if e.Seq != seq {
				t.Fatalf("event seq %d, want %d (got so far %d)", e.Seq, seq, len(got))
			}
			got = append(got, e)
		case <-time.After(10 * time.Second):
			t.Fatalf("no event seq %d within 10 s", seq)
		}
	}
	return got
}

// TestClientTail: Tail replays after a seq, then passes live events in seq
// order, through the filter, until its context ends; a bad filter is the
// service's 400.
func TestClientTail(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		c := s.client("tail")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		post := func(action string) *client.Event {
			t.Helper()
			e, err := c.PostEvent(ctx, client.NewEvent{ActorID: "u1", Action: action})
			if err != nil {
				t.Fatal(err)
			}
			return e
		}
		post("doc.read")
		post("user.login")
		post("doc.write")
		zero := int64(0)
		events, done := tailInto(ctx, c, client.TailOptions{After: &zero, Filter: client.Filter{Action: "doc.*"}})
		got := expectSeqs(t, events, 1, 3)
		if raw := s.get("/api/v1/events/"+got[1].ID, pluginHeaders("tail")).raw; mustJSON(t, got[1])+"\n" != string(raw) {
			t.Fatalf("streamed event differs from GET:\n%s\n%s", mustJSON(t, got[1]), raw)
		}
		post("user.logout")
		live := post("doc.delete")
		if e := expectSeqs(t, events, 5); e[0].ID != live.ID {
			t.Fatalf("live event %+v, want %+v", e[0], live)
		}
		// Without After, only what comes after the head at connection time.
		ctx2, cancel2 := context.WithCancel(ctx)
		fresh, done2 := tailInto(ctx2, c, client.TailOptions{})
		time.Sleep(300 * time.Millisecond) // let it connect
		post("x.y")
		expectSeqs(t, fresh, 6)
		expectSeqs(t, events) // nothing: x.y does not match doc.*
		cancel2()
		if err := <-done2; !errors.Is(err, context.Canceled) {
			t.Fatalf("Tail after cancel: %v", err)
		}
		select {
		case e := <-events:
			t.Fatalf("an event that does not match the filter: %+v", e)
		default:
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Tail after cancel: %v", err)
		}
		var apiErr *client.Error
		err := c.Tail(context.Background(), client.TailOptions{Filter: client.Filter{Severity: "loud"}}, func(*client.Event) error { return nil })
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || !strings.Contains(apiErr.Message, "severity") {
			t.Fatalf("bad filter: %v", err)
		}
		stop := errors.New("enough")
		err = c.Tail(context.Background(), client.TailOptions{After: &zero}, func(*client.Event) error { return stop })
		if err != stop {
			t.Fatalf("callback error: %v", err)
		}
	})
}

// sseCutter forwards /api/v1/events/stream to the service, answering the
// first connection with its first frames only (cut after one event, or
// silent from the start), and records each connection's Last-Event-ID.
type sseCutter struct {
	target string
	silent bool // the first connection sends headers and then nothing

	mu     sync.Mutex
	conns  int
	resume []string
}

func (p *sseCutter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.conns++
	first := p.conns == 1
	p.resume = append(p.resume, r.Header.Get("Last-Event-ID"))
	p.mu.Unlock()
	req, _ := http.NewRequestWithContext(r.Context(), r.Method, p.target+r.URL.RequestURI(), nil)
	req.Header = r.Header.Clone()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		w.WriteHeader(502)
		return
	}
	defer res.Body.Close()
	for k, v := range res.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(res.StatusCode)
	rc := http.NewResponseController(w)
	rc.Flush()
	if first && p.silent {
		<-r.Context().Done()
		return
	}
	br := bufio.NewReader(res.Body)
	for {
		line, err := br.ReadString('\n')
		io.WriteString(w, line)
		rc.Flush()
		if err != nil {
			return
		}
		if first && line == "\n" { // one frame delivered: cut the stream
			return
		}
	}
}

// TestClientTailReconnects: a stream cut after its first event, or silent
// past the idle timeout, is reconnected with Last-Event-ID, and the events
// recorded meanwhile arrive once each, in order.
func TestClientTailReconnects(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		for _, silent := range []bool{false, true} {
			account := fmt.Sprintf("recon-%v", silent)
			direct := s.client(account)
			ctx, cancel := context.WithCancel(context.Background())
			for range 2 {
				if _, err := direct.PostEvent(ctx, client.NewEvent{ActorID: "u1", Action: "a.b"}); err != nil {
					t.Fatal(err)
				}
			}
			cutter := &sseCutter{target: s.url, silent: silent}
			proxy := httptest.NewServer(cutter)
			c, _ := client.New(proxy.URL, testSecret, client.WithAccount(account), client.WithBackoff(50*time.Millisecond, 100*time.Millisecond))
			var mu sync.Mutex
			var causes []string
			o := client.TailOptions{IdleTimeout: 500 * time.Millisecond, OnReconnect: func(err error) {
				mu.Lock()
				causes = append(causes, err.Error())
				mu.Unlock()
			}}
			zero := int64(0)
			o.After = &zero
			want := []int64{1, 2, 3}
			events, done := tailInto(ctx, c, o)
			if !silent {
				expectSeqs(t, events, 1)
				want = want[1:]
			}
			// Recorded while the first connection is cut or silent.
			if _, err := direct.PostEvent(ctx, client.NewEvent{ActorID: "u1", Action: "a.b"}); err != nil {
				t.Fatal(err)
			}
			expectSeqs(t, events, want...)
			if _, err := direct.PostEvent(ctx, client.NewEvent{ActorID: "u1", Action: "a.b"}); err != nil {
				t.Fatal(err)
			}
			expectSeqs(t, events, 4)
			cancel()
			<-done
			proxy.Close()
			select {
			case e := <-events:
				t.Fatalf("silent=%v: an event twice or extra: seq %d", silent, e.Seq)
			default:
			}
			cutter.mu.Lock()
			mu.Lock()
			wantResume := "1"
			if silent {
				wantResume = "0"
			}
			if len(cutter.resume) < 2 || cutter.resume[0] != "0" || cutter.resume[1] != wantResume || len(causes) == 0 {
				t.Fatalf("silent=%v: Last-Event-ID per connection %q, reconnect causes %q", silent, cutter.resume, causes)
			}
			if silent && !strings.Contains(causes[0], "silent for 500ms") {
				t.Fatalf("idle reconnect cause: %q", causes)
			}
			mu.Unlock()
			cutter.mu.Unlock()
		}
	})
}

// TestCLITail runs `events tail` as the real binary: the catch-up after
// --after, live events, a filter, and exit 0 on SIGINT.
func TestCLITail(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		c := s.client("cli-tail")
		ctx := context.Background()
		for _, a := range []string{"doc.read", "user.login"} {
			if _, err := c.PostEvent(ctx, client.NewEvent{ActorID: "u1", Action: a}); err != nil {
				t.Fatal(err)
			}
		}
		cmd := cliCommand(t, s.url, "", nil, "events", "tail", "--account", "cli-tail", "--after", "0", "--action", "doc.*")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var errOut strings.Builder
		cmd.Stderr = &errOut
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 10)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		next := func() string {
			t.Helper()
			select {
			case l := <-lines:
				return l
			case <-time.After(10 * time.Second):
				t.Fatalf("no line from events tail in 10 s; stderr %q", errOut.String())
			}
			return ""
		}
		if l := next(); !strings.Contains(l, `"seq":1,`) || !strings.Contains(l, `"action":"doc.read"`) {
			t.Fatalf("catch-up line: %s", l)
		}
		for _, a := range []string{"user.logout", "doc.write"} {
			if _, err := c.PostEvent(ctx, client.NewEvent{ActorID: "u1", Action: a}); err != nil {
				t.Fatal(err)
			}
		}
		if l := next(); !strings.Contains(l, `"seq":4,`) || !strings.Contains(l, `"action":"doc.write"`) {
			t.Fatalf("live line: %s", l)
		}
		cmd.Process.Signal(os.Interrupt)
		err = cmd.Wait()
		if err != nil {
			t.Fatalf("events tail after SIGINT: %v; stderr %q", err, errOut.String())
		}
		if l, ok := <-lines; ok {
			t.Fatalf("an extra line: %s", l)
		}
	})
}
