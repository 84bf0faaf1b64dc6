package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nself-org/nself-audit/internal/audit"
	"github.com/nself-org/nself-audit/internal/storetest"
)

// writeLoad posts events from several clients, each request with an
// idempotency key of its own (also kept in the event's metadata), and
// records what became of every key, so that a test can retry what was not
// acknowledged and then prove that the store holds each key exactly once.
type writeLoad struct {
	accounts []string
	client   *http.Client

	mu         sync.Mutex
	url        string                // the service's base URL
	writes     map[string]loadWrite  // every key sent, and its event
	acked      map[string]string     // key → event id, for 2xx answers
	unacked    map[string]bool       // keys sent without a 2xx answer yet
	statuses   map[int]int           // answers by status
	noAnswer   int                   // requests that got no answer at all
	slowest503 time.Duration         // the longest time to a 503
	unexpected []string              // answers that are never acceptable
	allowed    func(status int) bool // statuses accepted during the load

	stop chan struct{}
	wg   sync.WaitGroup
}

// loadWrite is one event of the load.
type loadWrite struct{ account, body string }

// startWriteLoad starts clients that post as fast as the service answers,
// spread over accounts, until halt. A client whose request got no answer or
// a 503 sends it again, same key, until it is acknowledged or the load halts. Every answer but 201, 200 (a replay)
// and 503 with Retry-After is recorded as unexpected.
func startWriteLoad(url string, clients int, accounts ...string) *writeLoad {
	l := &writeLoad{
		url: url, accounts: accounts,
		client: &http.Client{Timeout: 10 * time.Second},
		writes: map[string]loadWrite{}, acked: map[string]string{},
		unacked: map[string]bool{}, statuses: map[int]int{},
		stop: make(chan struct{}),
	}
	for c := 0; c < clients; c++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; {
				key := fmt.Sprintf("c%d-%d", c, i)
				w := loadWrite{
					account: accounts[(c+i)%len(accounts)],
					body:    fmt.Sprintf(`{"actor_id":"c%d","action":"load.write","metadata":{"k":%q}}`, c, key),
				}
				// Without an answer, or refused for now, a client tries the
				// same key again after a pause; else it moves on.
				pause := time.Duration(0)
				switch l.send(key, w) {
				case 0, 503:
					pause = 50 * time.Millisecond
				default:
					i++
				}
				select {
				case <-l.stop:
					return
				case <-time.After(pause):
				}
			}
		}()
	}
	return l
}

// halt stops the clients and waits for their last requests.
func (l *writeLoad) halt() {
	close(l.stop)
	l.wg.Wait()
}

// send posts one write with its key and records the outcome; it returns
// the status, 0 when there was no answer.
func (l *writeLoad) send(key string, w loadWrite) int {
	l.mu.Lock()
	url := l.url
	l.writes[key] = w
	if _, done := l.acked[key]; !done {
		l.unacked[key] = true
	}
	l.mu.Unlock()
	req, _ := http.NewRequest("POST", url+"/api/v1/events", strings.NewReader(w.body))
	req.Header.Set("Authorization", "Bearer "+testSecret)
	req.Header.Set("X-Source-Account-Id", w.account)
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	res, err := l.client.Do(req)
	if err != nil {
		l.mu.Lock()
		l.noAnswer++
		l.mu.Unlock()
		return 0
	}
	var body struct {
		ID    string
		Error struct{ Code string }
	}
	decodeErr := json.NewDecoder(res.Body).Decode(&body)
	res.Body.Close()
	took := time.Since(start)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.statuses[res.StatusCode]++
	switch {
	case (res.StatusCode == 201 || res.StatusCode == 200) && decodeErr == nil && body.ID != "":
		if prev, ok := l.acked[key]; ok && prev != body.ID {
			l.unexpected = append(l.unexpected, fmt.Sprintf("key %s acknowledged as %s and as %s", key, prev, body.ID))
		}
		l.acked[key] = body.ID
		delete(l.unacked, key)
	case res.StatusCode == 503 && res.Header.Get("Retry-After") != "" && body.Error.Code == "unavailable":
		l.slowest503 = max(l.slowest503, took)
	case l.allowed != nil && l.allowed(res.StatusCode):
	default:
		l.unexpected = append(l.unexpected, fmt.Sprintf("%d (code %q, Retry-After %q) after %v",
			res.StatusCode, body.Error.Code, res.Header.Get("Retry-After"), took.Round(time.Millisecond)))
	}
	return res.StatusCode
}

// ackedCount is how many keys got a 2xx so far.
func (l *writeLoad) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// retryUnacked sends every key without a 2xx again, with the same body,
// to url (the service after its restart), as a client that got no answer
// does; each must now be acknowledged: 201 when the first attempt was not
// stored, 200 when it was. It returns how many of each.
func (l *writeLoad) retryUnacked(t *testing.T, url string) (created, replayed int) {
	t.Helper()
	l.mu.Lock()
	l.url = url
	pending := make(map[string]loadWrite, len(l.unacked))
	for k := range l.unacked {
		pending[k] = l.writes[k]
	}
	l.mu.Unlock()
	for key, w := range pending {
		switch st := l.send(key, w); st {
		case 201:
			created++
		case 200:
			replayed++
		default:
			t.Errorf("retry of key %s: status %d, want 201 or 200", key, st)
		}
	}
	return created, replayed
}

// resendAcked sends up to n acknowledged keys again, same body, to url, as
// clients whose answer was lost on the way would: each must be answered
// 200 with the event first stored under that key (send records any other
// id as unexpected). It returns how many it sent.
func (l *writeLoad) resendAcked(t *testing.T, url string, n int) int {
	t.Helper()
	l.mu.Lock()
	l.url = url
	resend := map[string]loadWrite{}
	for k := range l.acked { // map order: a different sample each run
		if len(resend) == n {
			break
		}
		resend[k] = l.writes[k]
	}
	l.mu.Unlock()
	for key, w := range resend {
		if st := l.send(key, w); st != 200 {
			t.Errorf("resent key %s: status %d, want 200 (a replay)", key, st)
		}
	}
	return len(resend)
}

// checkStored reads every account's chain from st (each verifies) and
// checks that its load events hold exactly the acknowledged keys, each once
// and under the acknowledged id. It returns the number of load events.
func (l *writeLoad) checkStored(t *testing.T, st audit.Store) int {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, u := range l.unexpected {
		t.Errorf("unexpected answer during the load: %s", u)
	}
	seen := map[string]string{}
	total := 0
	for _, a := range l.accounts {
		for _, e := range storetest.ReadChain(t, st, a, 1000) {
			if e.Action != "load.write" {
				continue // a test's own event
			}
			total++
			var meta struct{ K string }
			if err := json.Unmarshal(e.Metadata, &meta); err != nil || meta.K == "" {
				t.Errorf("event %s has no load key: %s", e.ID, e.Metadata)
				continue
			}
			if prev, dup := seen[meta.K]; dup {
				t.Errorf("key %s stored twice: events %s and %s", meta.K, prev, e.ID)
			}
			seen[meta.K] = e.ID.String()
			if id, ok := l.acked[meta.K]; !ok {
				t.Errorf("key %s stored as %s but never acknowledged", meta.K, e.ID)
			} else if id != e.ID.String() {
				t.Errorf("key %s acknowledged as %s, stored as %s", meta.K, id, e.ID)
			}
		}
	}
	lost := 0
	for k := range l.acked {
		if _, ok := seen[k]; !ok {
			lost++
			if lost <= 10 {
				t.Errorf("acknowledged key %s (event %s) is not stored", k, l.acked[k])
			}
		}
	}
	if lost > 0 {
		t.Errorf("%d acknowledged events lost", lost)
	}
	if len(l.unacked) > 0 {
		t.Errorf("%d keys never acknowledged, even on retry", len(l.unacked))
	}
	return total
}
