package sqlite

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nself-org/nself-audit/internal/audit"
	"github.com/nself-org/nself-audit/internal/storetest"
)

// childEnv names the role of a re-executed test binary: the tests below
// start copies of themselves as other processes using the same file.
const childEnv = "NSELF_AUDIT_SQLITE_CHILD"

func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		if err := runChild(role, os.Getenv("CHILD_DB"), os.Getenv("CHILD_N")); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runChild is the other process. "append" appends n batches of 5 events
// spread over acme and globex; "durable" appends n events one at a time
// and prints "<seq> <id>" for each after Append has returned.
func runChild(role, path, nText string) error {
	n, err := strconv.Atoi(nText)
	if err != nil {
		return err
	}
	ctx := context.Background()
	s, err := Open(ctx, path)
	if err != nil {
		return err
	}
	defer s.Close()
	switch role {
	case "append":
		for b := 0; b < n; b++ {
			var its []*audit.AppendItem
			for i := 0; i < 5; i++ {
				its = append(its, &audit.AppendItem{Event: childEvent([]string{"acme", "globex"}[(b+i)%2], "child")})
			}
			if err := s.Append(ctx, its); err != nil {
				return err
			}
		}
	case "durable":
		for i := 0; i < n; i++ {
			it := &audit.AppendItem{Event: childEvent("acme", "child")}
			if err := s.Append(ctx, []*audit.AppendItem{it}); err != nil {
				return err
			}
			// os.Stdout is unbuffered: the line is out once Fprintf returns.
			if _, err := fmt.Fprintf(os.Stdout, "%d %s\n", it.Event.Seq, it.Event.ID); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("unknown role %q", role)
	}
	return nil
}

func childEvent(account, actor string) *audit.Event {
	in := &audit.EventInput{ActorID: actor, Action: "proc.append", Metadata: []byte(`{"pid":` + strconv.Itoa(os.Getpid()) + `}`)}
	e, err := in.Validate(account, "", time.Now())
	if err != nil {
		panic(err)
	}
	return e
}

func childCommand(t *testing.T, role, path string, n int) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+role, "CHILD_DB="+path, "CHILD_N="+strconv.Itoa(n))
	return cmd
}

// TestProcessesShareOneChain: another process appends to the same file
// while this one does; every account keeps one gap-free, verified chain.
func TestProcessesShareOneChain(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "audit.db")
	s := openAt(t, path)
	const childBatches, parentBatches = 40, 40
	var children []*exec.Cmd
	var outputs []*strings.Builder
	for i := 0; i < 2; i++ {
		cmd := childCommand(t, "append", path, childBatches)
		out := &strings.Builder{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		children, outputs = append(children, cmd), append(outputs, out)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*parentBatches)
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; b < parentBatches; b++ {
				its := items(storetest.Event(t, "acme", time.Time{}, "actor_id=parent"), storetest.Event(t, "globex", time.Time{}, "actor_id=parent"),
					storetest.Event(t, "acme", time.Time{}, "actor_id=parent"))
				errs <- s.Append(context.Background(), its)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, cmd := range children {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("child %d: %v\n%s", i, err, outputs[i])
		}
	}
	acme, globex := storetest.ReadChain(t, s, "acme", 7), storetest.ReadChain(t, s, "globex", 7)
	if want := 2*childBatches*5 + 2*parentBatches*3; len(acme)+len(globex) != want {
		t.Fatalf("chains hold %d events, want %d", len(acme)+len(globex), want)
	}
	// The writers interleaved: the chain holds both processes' events.
	actors := map[string]int{}
	for _, e := range acme {
		actors[e.ActorID]++
	}
	if actors["child"] != 2*childBatches*5/2 || actors["parent"] != 2*parentBatches*2 {
		t.Fatalf("acme's events by actor: %v", actors)
	}
}

// TestAcknowledgedSurvivesKill: a process appends events one by one and
// prints each after Append returns; it is killed with SIGKILL part-way.
// Every event it acknowledged is in the file and the chain verifies.
func TestAcknowledgedSurvivesKill(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "audit.db")
	cmd := childCommand(t, "durable", path, 1_000_000)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	type ack struct {
		seq int64
		id  uuid.UUID
	}
	var acks []ack
	sc := bufio.NewScanner(stdout)
	killed := false
	for sc.Scan() {
		seqText, idText, _ := strings.Cut(sc.Text(), " ")
		seq, err := strconv.ParseInt(seqText, 10, 64)
		id, err2 := uuid.Parse(idText)
		if err != nil || err2 != nil {
			t.Fatalf("child printed %q", sc.Text())
		}
		acks = append(acks, ack{seq, id})
		if len(acks) == 60 && !killed {
			if err := cmd.Process.Kill(); err != nil { // SIGKILL, mid-stream
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed || err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("child was not killed: %v\n%s", err, stderr.String())
	}
	t.Logf("child acknowledged %d events before SIGKILL", len(acks))

	s := openAt(t, path)
	evs := storetest.ReadChain(t, s, "acme", 7)
	if len(evs) < len(acks) {
		t.Fatalf("the file holds %d events; %d were acknowledged", len(evs), len(acks))
	}
	for i, a := range acks {
		if a.seq != int64(i+1) || evs[i].ID != a.id {
			t.Fatalf("acknowledged seq %d (%s) is %d (%s) in the file", a.seq, a.id, evs[i].Seq, evs[i].ID)
		}
		if _, err := s.Event(context.Background(), audit.Scope{AccountID: "acme"}, a.id); err != nil {
			t.Fatalf("acknowledged event %s: %v", a.id, err)
		}
	}
	// The recovered file takes new events after the last one.
	e := storetest.Event(t, "acme", time.Time{})
	storetest.AppendAll(t, s, e)
	if e.Seq != int64(len(evs)+1) {
		t.Fatalf("next seq %d, want %d", e.Seq, len(evs)+1)
	}
	storetest.ReadChain(t, s, "acme", 7)
}
