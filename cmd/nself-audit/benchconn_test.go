package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestBenchConn: the load generator's HTTP/1.1 client sends what net/http
// reads as the request, and reads every form of answer the server may give
// (a length, chunks, a body to the end of a closed connection, none),
// reusing the connection when the server keeps it and dialling again when
// it does not.
func TestBenchConn(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 20000) // 320 kB: many chunks, longer than the buffer
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("Authorization"); got != "Bearer tok-123" {
			t.Errorf("Authorization %q", got)
		}
		if got := r.Header.Get("X-Source-Account-Id"); got != "acct-7" {
			t.Errorf("X-Source-Account-Id %q", got)
		}
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/echo":
			if r.Header.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type %q", r.Header.Get("Content-Type"))
			}
			w.WriteHeader(http.StatusCreated)
			w.Write(body)
		case "/chunked":
			for i := 0; i < len(big); i += 7000 {
				w.Write([]byte(big[i:min(i+7000, len(big))]))
				w.(http.Flusher).Flush()
			}
		case "/close":
			w.Header().Set("Connection", "close")
			w.Write([]byte("bye"))
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/query":
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(r.URL.RawQuery))
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	c, err := newBenchConn(srv.URL, "tok-123")
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	ctx := context.Background()
	check := func(method, path string, body []byte, wantStatus int, want string) {
		t.Helper()
		status, got, err := c.do(ctx, method, path, "acct-7", body)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		if status != wantStatus || string(got) != want {
			t.Fatalf("%s %s: %d %.60q; want %d %.60q", method, path, status, got, wantStatus, want)
		}
	}
	payload := []byte(`{"action":"doc.read"}`)
	check("POST", "/echo", payload, 201, string(payload))
	check("GET", "/chunked", nil, 200, big)
	check("GET", "/query?limit=50&action=doc.%2A", nil, 400, "limit=50&action=doc.%2A")
	check("GET", "/empty", nil, 204, "")
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for four requests; want one kept alive", n)
	}
	check("GET", "/close", nil, 200, "bye")
	check("POST", "/echo", bytes.Repeat(payload, 3), 201, strings.Repeat(string(payload), 3))
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections; want a second one after the server closed the first", n)
	}

	srv.CloseClientConnections()
	if _, _, err := c.do(ctx, "GET", "/empty", "acct-7", nil); err == nil {
		t.Fatal("a request on a connection the server closed succeeded")
	}
	check("GET", "/empty", nil, 204, "") // dialled again

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := c.do(cctx, "GET", "/empty", "acct-7", nil); err == nil {
		t.Fatal("a request with an ended context succeeded")
	}
}

// TestCountEvents: the bench's byte scanner counts a list answer's events
// as decoding it does, and refuses what is not a list answer.
func TestCountEvents(t *testing.T) {
	for _, c := range []struct {
		body string
		n    int
		ok   bool
	}{
		{`{"events":[],"next_cursor":null}`, 0, true},
		{`{"events":[{"a":1}],"next_cursor":null}`, 1, true},
		{`{"events":[{"a":"}]{[\"\\"},{"b":{"c":[1,{"d":2}]}},{}],"next_cursor":"x"}`, 3, true},
		{"{\"events\":[ {\"a\":1} , {\"b\":\"]\"} ]}\n", 2, true},
		{`{"events":[{"a":1}`, 0, false},
		{`{"events":[1,2]}`, 0, false},
		{`{"error":"nope"}`, 0, false},
		{``, 0, false},
	} {
		n, ok := countEvents([]byte(c.body))
		if n != c.n || ok != c.ok {
			t.Errorf("countEvents(%s) = %d, %v; want %d, %v", c.body, n, ok, c.n, c.ok)
		}
		if c.ok {
			var a struct{ Events []json.RawMessage }
			if err := json.Unmarshal([]byte(c.body), &a); err != nil || len(a.Events) != c.n {
				t.Errorf("%s: encoding/json finds %d events (%v)", c.body, len(a.Events), err)
			}
		}
	}
}
