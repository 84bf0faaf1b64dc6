package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nself-org/nself-audit/client"
	"github.com/nself-org/nself-audit/internal/audit"
)

// withCheckpointEvents turns the automatic checkpointer on (it is off in
// the in-process tests, whose checkpoints must be deterministic).
func withCheckpointEvents(n int64) option {
	return func(c *Config) { c.CheckpointEvents, c.CheckpointInterval = n, time.Minute }
}

func decodeCheckpoint(t *testing.T, raw []byte) *audit.Checkpoint {
	t.Helper()
	var c audit.Checkpoint
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return &c
}

func TestCheckpointRoutes(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store, withJWT(`{"type":"HS256","key":"`+hsKey+`"}`))
		h := pluginHeaders("acme")
		if r := s.do("POST", "/api/v1/checkpoints", h, ""); r.status != 409 {
			t.Fatalf("checkpoint of an empty account: %d %s", r.status, r.raw)
		}
		if r := s.do("GET", "/api/v1/checkpoints/latest", h, ""); r.status != 404 {
			t.Fatalf("latest of none: %d %s", r.status, r.raw)
		}
		if r := s.get("/api/v1/checkpoints", h); string(r.raw) != "{\"checkpoints\":[]}\n" {
			t.Fatalf("empty list: %s", r.raw)
		}
		hashes := postN(s, "acme", 3)
		r := s.do("POST", "/api/v1/checkpoints", h, "")
		if r.status != 201 {
			t.Fatalf("checkpoint: %d %s", r.status, r.raw)
		}
		c1 := decodeCheckpoint(t, r.raw)
		for _, k := range []string{"seq", "hash", "signature", "key_id", "created_at"} {
			if _, ok := r.body[k]; !ok {
				t.Errorf("checkpoint has no %s: %s", k, r.raw)
			}
		}
		if c1.Seq != 3 || c1.Hash != hashes[3] || c1.PrevSignature != "" {
			t.Fatalf("checkpoint %+v", c1)
		}
		if r := s.do("POST", "/api/v1/checkpoints", h, ""); r.status != 200 || decodeCheckpoint(t, r.raw).Signature != c1.Signature {
			t.Fatalf("checkpoint without new events: %d %s", r.status, r.raw)
		}
		postN(s, "acme", 2)
		c2 := decodeCheckpoint(t, s.do("POST", "/api/v1/checkpoints", h, "").raw)
		if c2.Seq != 5 || c2.PrevSignature != c1.Signature {
			t.Fatalf("second checkpoint %+v", c2)
		}

		pk := s.get("/api/v1/public-key", h).body
		raw, _ := base64.StdEncoding.DecodeString(pk["public_key"].(string))
		pub := ed25519.PublicKey(raw)
		if pk["algorithm"] != "ed25519" || len(raw) != 32 || pk["key_id"] != c1.KeyID || pk["key_id"] != audit.KeyID(pub) {
			t.Fatalf("public key %v", pk)
		}
		var list struct{ Checkpoints []*audit.Checkpoint }
		json.Unmarshal(s.get("/api/v1/checkpoints", h).raw, &list)
		if len(list.Checkpoints) != 2 {
			t.Fatalf("%d checkpoints listed", len(list.Checkpoints))
		}
		for _, c := range list.Checkpoints {
			if err := audit.VerifyCheckpoint(c, pub); err != nil {
				t.Errorf("listed checkpoint: %v", err)
			}
		}
		if latest := decodeCheckpoint(t, s.get("/api/v1/checkpoints/latest", h).raw); latest.Signature != c2.Signature {
			t.Errorf("latest is not the second checkpoint")
		}
		if r := s.get("/api/v1/checkpoints?from_seq=4", h); len(r.body["checkpoints"].([]any)) != 1 {
			t.Errorf("from_seq=4: %s", r.raw)
		}
		for _, q := range []string{"limit=0", "limit=1001", "from_seq=x", "colour=red"} {
			if r := s.do("GET", "/api/v1/checkpoints?"+q, h, ""); r.status != 400 {
				t.Errorf("checkpoints?%s: %d", q, r.status)
			}
		}
		// Other accounts see none of these; a user role sees no checkpoint.
		if r := s.get("/api/v1/checkpoints", pluginHeaders("globex")); len(r.body["checkpoints"].([]any)) != 0 {
			t.Errorf("globex sees acme's checkpoints: %s", r.raw)
		}
		admin := hsToken(t, claims{user: "root", role: "admin", account: "acme", allowed: []string{"admin"}})
		if r := s.do("POST", "/api/v1/checkpoints", bearer(admin), ""); r.status != 403 {
			t.Errorf("an admin JWT creates a checkpoint: %d", r.status)
		}
		if r := s.do("GET", "/api/v1/checkpoints/latest", bearer(admin), ""); r.status != 200 {
			t.Errorf("an admin JWT reads the latest checkpoint: %d", r.status)
		}
		user := hsToken(t, claims{user: "u1", role: "user", account: "acme", allowed: []string{"user"}})
		for _, rt := range []struct{ method, path string }{{"POST", "/api/v1/checkpoints"}, {"GET", "/api/v1/checkpoints"}, {"GET", "/api/v1/checkpoints/latest"}} {
			if r := s.do(rt.method, rt.path, bearer(user), ""); r.status != 403 {
				t.Errorf("%s %s as a user role: %d", rt.method, rt.path, r.status)
			}
		}
	})
}

// TestAutomaticCheckpoints: every NSELF_AUDIT_CHECKPOINT_EVENTS events the
// checkpointer signs the head by itself.
func TestAutomaticCheckpoints(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store, withCheckpointEvents(5))
		postN(s, "acme", 12)
		// The checkpointer looks once a second and signs when the head is
		// 5 or more past the last checkpoint. How the 12 posts fall between
		// its looks decides where it signed; once it is idle, the head (12)
		// is less than 5 past the latest checkpoint.
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := s.do("GET", "/api/v1/checkpoints/latest", pluginHeaders("acme"), "")
			if r.status == 200 && decodeCheckpoint(t, r.raw).Seq > 12-5 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no checkpoint past seq 7 after 10 s: %d %s", r.status, r.raw)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// TestOfflineVerifyWithCheckpoints: the auditor's check of an export
// against signed checkpoints, and where that proof ends.
func TestOfflineVerifyWithCheckpoints(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		c := s.client("acme")
		ctx := context.Background()
		checkpoint := func() {
			t.Helper()
			if _, created, err := c.CreateCheckpoint(ctx); err != nil || !created {
				t.Fatalf("checkpoint: %v %v", created, err)
			}
		}
		postN(s, "acme", 10)
		checkpoint()
		postN(s, "acme", 5)
		checkpoint()
		postN(s, "acme", 3) // seq 16-18: after the last checkpoint

		dir := t.TempDir()
		write := func(name string, b []byte) string {
			p := filepath.Join(dir, name)
			os.WriteFile(p, b, 0o600)
			return p
		}
		var export bytes.Buffer
		if _, err := c.Export(ctx, &export, client.ExportOptions{}); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(export.String()), "\n")
		list, err := c.Checkpoints(ctx, client.CheckpointOptions{})
		pub, err2 := c.PublicKey(ctx)
		if err != nil || err2 != nil || len(list) != 2 {
			t.Fatalf("checkpoints %v %v, public key %v", list, err, err2)
		}
		cps := []byte(mustJSON(t, client.CheckpointList{Checkpoints: list}))
		keyFile := write("key.b64", []byte(pub.PublicKey+"\n"))
		cpFile := write("checkpoints.json", cps)
		verify := func(name string, lines []string, cpPath string, extra ...string) (int, string) {
			args := append([]string{"--file", write(name, []byte(strings.Join(lines, "\n")+"\n")), "--checkpoints", cpPath, "--public-key", keyFile}, extra...)
			var out, errOut bytes.Buffer
			code := verifyFile(args, &out, &errOut)
			return code, out.String() + errOut.String()
		}
		code, out := verify("good.ndjson", lines, cpFile)
		if code != 0 || !strings.Contains(out, "2 signed checkpoints in the file's range verify, the last at seq 15") || !strings.Contains(out, "after seq 15 are chained but not yet covered") {
			t.Fatalf("intact export with checkpoints: %d %s", code, out)
		}

		// Truncated at the end, before a checkpoint: caught, unless the file
		// is declared a range.
		if code, out := verify("short.ndjson", lines[:12], cpFile); code != 1 || !strings.Contains(out, "truncated") {
			t.Errorf("export cut at seq 12: %d %s", code, out)
		}
		if code, _ := verify("range.ndjson", lines[:12], cpFile, "--partial"); code != 0 {
			t.Errorf("a range export with --partial: %d", code)
		}

		// A forged signature.
		forged := bytes.Replace(cps, []byte(`"signature":"`), []byte(`"signature":"AAAA`), 1)
		if code, out := verify("good.ndjson", lines, write("forged.json", forged)); code != 1 || !strings.Contains(out, "signature") {
			t.Errorf("forged checkpoint: %d %s", code, out)
		}
		// The wrong key.
		other := write("other.b64", []byte(base64.StdEncoding.EncodeToString(make([]byte, 32))))
		args := []string{"--file", write("g2.ndjson", []byte(strings.Join(lines, "\n"))), "--checkpoints", cpFile, "--public-key", other}
		if code := verifyFile(args, &bytes.Buffer{}, &bytes.Buffer{}); code != 1 {
			t.Errorf("checkpoints checked with another key: exit %d", code)
		}

		// Someone with database access rewrites the chain from an event on,
		// recomputing every hash after it: before the last checkpoint the
		// signature exposes it; after it, nothing can (the documented limit).
		rewrite := func(from int) []string {
			var out []string
			prevSeq, prevHash := int64(0), audit.GenesisHash
			for i, l := range lines {
				var e audit.Event
				if err := json.Unmarshal([]byte(l), &e); err != nil {
					t.Fatal(err)
				}
				if i+1 == from {
					e.Action = "doc.rewritten"
				}
				if i+1 >= from {
					audit.Link(&e, prevSeq, prevHash)
				}
				prevSeq, prevHash = e.Seq, e.Hash
				b, _ := json.Marshal(e)
				out = append(out, string(b))
			}
			return out
		}
		if code, out := verify("rewritten-early.ndjson", rewrite(7), cpFile); code != 1 || !strings.Contains(out, "first bad seq 10") {
			t.Errorf("chain rewritten from seq 7: %d %s", code, out)
		}
		if code, out := verify("rewritten-late.ndjson", rewrite(17), cpFile); code != 0 || !strings.Contains(out, "not yet covered") {
			t.Errorf("chain rewritten after the last checkpoint: %d %s (only a later checkpoint or an earlier copy catches it)", code, out)
		}
	})
}

func withSigningKey(seed string) option {
	return func(c *Config) { c.SigningKey = ed25519.NewKeyFromSeed([]byte(seed)) }
}

// TestKeyRotation: after the service restarts with a new signing key, old
// checkpoints stay verifiable with the old public key (key_id tells which),
// and the checkpoint chain runs on across the rotation.
func TestKeyRotation(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		var dbURL, file string
		if store == "postgres" {
			dbURL = pgtestDatabase(t)
		} else {
			file = filepath.Join(t.TempDir(), "audit.db")
		}
		ctx := context.Background()
		old := startOn(t, dbURL, file, withSigningKey("first signing key, 32 bytes long"))
		postN(old, "acme", 4)
		if _, _, err := old.client("acme").CreateCheckpoint(ctx); err != nil {
			t.Fatal(err)
		}
		oldKey, err := old.client("acme").PublicKey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		old.main.Close()

		cur := startOn(t, dbURL, file, withSigningKey("second signing key, 32 bytes ok!"))
		c := cur.client("acme")
		postN(cur, "acme", 3)
		if cp, created, err := c.CreateCheckpoint(ctx); err != nil || !created || cp.PrevSignature == "" {
			t.Fatalf("checkpoint after rotation: %+v %v %v", cp, created, err)
		}
		newKey, err := c.PublicKey(ctx)
		if err != nil || newKey.PublicKey == oldKey.PublicKey || newKey.KeyID == oldKey.KeyID {
			t.Fatalf("the key did not change: %+v %+v %v", oldKey, newKey, err)
		}
		dir := t.TempDir()
		write := func(name string, b []byte) string {
			p := filepath.Join(dir, name)
			os.WriteFile(p, b, 0o600)
			return p
		}
		var export bytes.Buffer
		if _, err := c.Export(ctx, &export, client.ExportOptions{}); err != nil {
			t.Fatal(err)
		}
		list, err := c.Checkpoints(ctx, client.CheckpointOptions{})
		if err != nil || len(list) != 2 || list[0].KeyID != oldKey.KeyID || list[1].KeyID != newKey.KeyID {
			t.Fatalf("checkpoints across the rotation: %+v %v", list, err)
		}
		events := write("events.ndjson", export.Bytes())
		cps := write("cps.json", []byte(mustJSON(t, client.CheckpointList{Checkpoints: list})))
		oldFile, newFile := write("old.b64", []byte(oldKey.PublicKey)), write("new.b64", []byte(newKey.PublicKey))
		var out bytes.Buffer
		if code := verifyFile([]string{"--file", events, "--checkpoints", cps, "--public-key", oldFile, "--public-key", newFile}, &out, &out); code != 0 ||
			!strings.Contains(out.String(), "2 signed checkpoints in the file's range verify") {
			t.Fatalf("both keys: exit %d\n%s", code, out.String())
		}
		out.Reset()
		if code := verifyFile([]string{"--file", events, "--checkpoints", cps, "--public-key", newFile}, &out, &out); code != 1 || !strings.Contains(out.String(), "which no --public-key names") {
			t.Fatalf("only the new key: exit %d\n%s", code, out.String())
		}
	})
}
