package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// TailOptions selects what Tail follows.
type TailOptions struct {
	Filter

	// After resumes the stream after this seq: every matching event with
	// a greater seq comes first (catch-up), then the live ones. Nil starts
	// at the account's chain head when Tail connects (only new events);
	// a pointer to 0 replays the whole chain first.
	After *int64

	// IdleTimeout is how long the stream may stay silent (the service
	// sends a heartbeat every 15 s) before Tail takes the connection for
	// dead and reconnects; default 45 s.
	IdleTimeout time.Duration

	// OnReconnect, if set, is called with the cause before each
	// reconnection (for logs).
	OnReconnect func(err error)
}

// Tail follows the account's events live (GET /api/v1/events/stream,
// Server-Sent Events) and calls fn with each matching event, in ascending
// seq order, until ctx ends (it then returns ctx's error), fn returns an
// error (returned as it is), or the service refuses the request with a
// status other than 503 (a *Error, such as a 400 for a bad filter).
//
// When the connection drops, or stays silent past IdleTimeout, Tail
// reconnects with a backoff and sends the seq of the last event it passed
// to fn as Last-Event-ID, so the service resends what came in between: no
// event is lost or passed twice. Until the first event arrives there is no
// seq to resume from; a reconnection then starts at the head again (or at
// After, when given), and events recorded while it was disconnected can be
// missed. Pass After to rule that out.
func (c *Client) Tail(ctx context.Context, o TailOptions, fn func(*Event) error) error {
	idle := o.IdleTimeout
	if idle <= 0 {
		idle = 45 * time.Second
	}
	var last int64 = -1 // the seq to resume after; -1: none
	if o.After != nil {
		if *o.After < 0 {
			return errors.New("client: Tail: After must not be negative")
		}
		last = *o.After
	}
	failures := 0
	for {
		delivered, err := c.tailOnce(ctx, o.Filter, &last, idle, fn)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var fnErr *callbackError
		if errors.As(err, &fnErr) {
			return fnErr.err
		}
		var apiErr *Error
		if errors.As(err, &apiErr) && apiErr.StatusCode != http.StatusServiceUnavailable {
			return err
		}
		if err == nil {
			err = errors.New("the stream ended")
		}
		if delivered {
			failures = 0
		}
		if o.OnReconnect != nil {
			o.OnReconnect(err)
		}
		wait := c.backoff(failures)
		if apiErr != nil {
			wait = max(wait, min(apiErr.RetryAfter, c.maxWait))
		}
		failures++
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// callbackError carries fn's error out of tailOnce.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }

// tailOnce holds one connection: it returns when the stream ends or fails,
// and reports whether any event was delivered.
func (c *Client) tailOnce(ctx context.Context, f Filter, last *int64, idle time.Duration, fn func(*Event) error) (bool, error) {
	connCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	timer := time.AfterFunc(idle, cancel)
	defer timer.Stop()
	r := &request{method: "GET", path: "/api/v1/events/stream", query: f.values(), header: http.Header{"Accept": {"text/event-stream"}}}
	if *last >= 0 {
		r.header.Set("Last-Event-ID", strconv.FormatInt(*last, 10))
	}
	res, err := c.send(connCtx, r)
	if err != nil {
		if ctx.Err() == nil && connCtx.Err() != nil {
			err = fmt.Errorf("no answer within %s", idle)
		}
		return false, err
	}
	defer res.Body.Close()
	timer.Reset(idle)
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var id, event string
	var data bytes.Buffer
	delivered := false
	for sc.Scan() {
		timer.Reset(idle)
		line := bytes.TrimSuffix(sc.Bytes(), []byte("\r"))
		if len(line) == 0 { // dispatch the frame
			if data.Len() > 0 && (event == "event" || event == "") {
				var e Event
				if err := json.Unmarshal(data.Bytes(), &e); err != nil {
					return delivered, fmt.Errorf("stream: an event frame does not hold an event: %v", err)
				}
				seq := e.Seq
				if n, err := strconv.ParseInt(id, 10, 64); err == nil {
					seq = n
				}
				if seq > *last { // never pass an event twice
					if err := fn(&e); err != nil {
						return delivered, &callbackError{err}
					}
					*last, delivered = seq, true
				}
			}
			id, event = "", ""
			data.Reset()
			continue
		}
		if line[0] == ':' { // a comment: the heartbeat
			continue
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(name) {
		case "id":
			id = string(value)
		case "event":
			event = string(value)
		case "data":
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.Write(value)
		}
	}
	err = sc.Err()
	if err != nil && ctx.Err() == nil && connCtx.Err() != nil {
		err = fmt.Errorf("the stream was silent for %s", idle)
	}
	return delivered, err
}
