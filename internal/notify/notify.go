// Package notify wakes the readers of an account's events when new ones are
// committed: a broadcast without payload, per account. A wake-up says only
// "look again"; readers then read the store, so nothing is lost when wakes
// coalesce, and events written by another process are found by the
// readers' own fallback poll.
package notify

import (
	"sync"

	"github.com/nself-org/nself-audit/internal/audit"
)

// Notifier fans commits out to subscribers. The zero value is not ready;
// use New. It is safe for concurrent use.
type Notifier struct {
	mu   sync.Mutex
	subs map[string]map[*Subscription]struct{}
}

// New returns an empty Notifier.
func New() *Notifier {
	return &Notifier{subs: map[string]map[*Subscription]struct{}{}}
}

// Subscription receives the wake-ups of one account until Close.
type Subscription struct {
	// C receives a value after commits to the account. It holds at most
	// one pending wake-up: commits that come while one is pending merge
	// into it.
	C <-chan struct{}

	c       chan struct{}
	n       *Notifier
	account string
}

// Subscribe starts receiving the account's wake-ups.
func (n *Notifier) Subscribe(account string) *Subscription {
	c := make(chan struct{}, 1)
	s := &Subscription{C: c, c: c, n: n, account: account}
	n.mu.Lock()
	defer n.mu.Unlock()
	set := n.subs[account]
	if set == nil {
		set = map[*Subscription]struct{}{}
		n.subs[account] = set
	}
	set[s] = struct{}{}
	return s
}

// Close stops the subscription; it may be called more than once.
func (s *Subscription) Close() {
	s.n.mu.Lock()
	defer s.n.mu.Unlock()
	set := s.n.subs[s.account]
	delete(set, s)
	if len(set) == 0 {
		delete(s.n.subs, s.account)
	}
}

// Notify wakes every subscriber of account. It never blocks.
func (n *Notifier) Notify(account string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for s := range n.subs[account] {
		select {
		case s.c <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}

// Subscribers is the number of open subscriptions.
func (n *Notifier) Subscribers() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	total := 0
	for _, set := range n.subs {
		total += len(set)
	}
	return total
}

// Committed is the group-commit writer's hook (ingest.Config.OnCommit
// without the duration): it wakes the accounts that got new events from a
// committed batch. A failed batch stored nothing, and neither did replayed
// or refused items.
func (n *Notifier) Committed(items []*audit.AppendItem, err error) {
	if err != nil {
		return
	}
	var last string
	for _, it := range items {
		if it.Err != nil || it.Replayed || it.Event == nil {
			continue
		}
		if a := it.Event.SourceAccountID; a != last { // a run of one account wakes it once
			n.Notify(a)
			last = a
		}
	}
}
