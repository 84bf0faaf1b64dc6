package notify

import (
	"errors"
	"testing"

	"github.com/nself-org/nself-audit/internal/audit"
)

func woken(s *Subscription) bool {
	select {
	case <-s.C:
		return true
	default:
		return false
	}
}

func TestNotify(t *testing.T) {
	t.Parallel()
	n := New()
	a1, a2, g := n.Subscribe("acme"), n.Subscribe("acme"), n.Subscribe("globex")
	if n.Subscribers() != 3 {
		t.Fatalf("%d subscribers", n.Subscribers())
	}
	n.Notify("acme")
	n.Notify("acme") // merges into the pending wake-up; never blocks
	if !woken(a1) || !woken(a2) || woken(g) {
		t.Fatal("acme's subscribers, and only they, are woken")
	}
	if woken(a1) {
		t.Fatal("two notifications while one was pending wake once")
	}
	a1.Close()
	a1.Close()
	n.Notify("acme")
	if woken(a1) || !woken(a2) {
		t.Fatal("a closed subscription is not woken; the others are")
	}
	a2.Close()
	g.Close()
	if n.Subscribers() != 0 || len(n.subs) != 0 {
		t.Fatalf("closed subscriptions remain: %d, %v", n.Subscribers(), n.subs)
	}
}

func TestCommitted(t *testing.T) {
	t.Parallel()
	n := New()
	acme, globex, initech := n.Subscribe("acme"), n.Subscribe("globex"), n.Subscribe("initech")
	item := func(account string) *audit.AppendItem {
		return &audit.AppendItem{Event: &audit.Event{SourceAccountID: account}}
	}
	n.Committed([]*audit.AppendItem{item("acme"), item("globex")}, errors.New("deadlock"))
	if woken(acme) || woken(globex) {
		t.Fatal("a failed batch stored nothing and wakes nobody")
	}
	replayed, refused := item("globex"), item("initech")
	replayed.Replayed = true
	refused.Err = audit.Errorf(audit.ECONFLICT, "key reused")
	n.Committed([]*audit.AppendItem{item("acme"), item("acme"), replayed, refused}, nil)
	if !woken(acme) || woken(globex) || woken(initech) {
		t.Fatal("only accounts with stored events are woken")
	}
}
