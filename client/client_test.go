package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The service's own answers are tested against the running service in
// cmd/nself-audit; these cases are answers it does not give itself but a
// proxy in front of it, or Go's HTTP server, may.

func TestErrorOfAPlainBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "nginx-1")
		http.Error(w, "<html>502 Bad Gateway</html>", http.StatusBadGateway)
	}))
	defer srv.Close()
	c, err := New(srv.URL+"/", "token-0123456789abcdef", WithRetries(3))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Stats(context.Background(), StatsOptions{})
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != 502 || e.Code != "" || e.Message != "<html>502 Bad Gateway</html>" || e.RequestID != "nginx-1" {
		t.Fatalf("%#v", err)
	}
	if got := e.Error(); got != "nself-audit: 502: <html>502 Bad Gateway</html> (request nginx-1)" {
		t.Fatalf("Error(): %q", got)
	}
}

func TestBackoffBounds(t *testing.T) {
	c, _ := New("http://127.0.0.1:1", "token-0123456789abcdef", WithBackoff(100*time.Millisecond, time.Second))
	for attempt, lo := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		lo *= time.Millisecond
		if d := c.backoff(attempt); d < lo || d > lo+lo/5 {
			t.Errorf("backoff(%d) = %s, want %s to %s", attempt, d, lo, lo+lo/5)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:3843", "ftp://h", "http://", "http://h?x=1"} {
		if _, err := New(u, "token"); err == nil || !strings.Contains(err.Error(), "base URL") {
			t.Errorf("New(%q): %v", u, err)
		}
	}
}
