package main

import (
	"bufio"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// attack is one hostile request and the answer it must get.
type attack struct {
	name    string
	method  string
	path    string
	headers map[string]string
	body    string
	want    int // the status that refuses it
}

// marker is in the one event of the account the attacks try to reach; no
// answer to an attacker may contain it.
const marker = "globex-private-marker"

// TestAttackMatrix sends the attacks an internet-facing audit log meets
// through the real wiring, on both stores, with Hasura JWTs (RS256, issuer
// and audience required) and the plugin token configured: missing, wrong
// and misplaced credentials, forged and out-of-date JWTs, role and account
// escalation by header, SQL injection in every filter, oversize and deeply
// nested bodies, oversize headers. Each is refused with the expected 4xx
// JSON error (never a 5xx), no answer holds another account's data, and
// nothing was written. The slow-client and idle-connection attacks are in
// TestSlowClientAndIdleConnections.
func TestAttackMatrix(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	jwtCfg, _ := json.Marshal(map[string]string{"type": "RS256", "key": string(pubPEM),
		"issuer": "https://auth.example", "audience": "nself-audit"})
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}

	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store, withJWT(string(jwtCfg)))
		s.post("acme", `{"actor_id":"alice","action":"doc.read","resource_id":"r1"}`)
		s.post("acme", `{"actor_id":"bob","action":"doc.write","resource_id":"r2"}`)
		secretID := s.post("globex", `{"actor_id":"alice","action":"doc.read","resource_id":"`+marker+`","metadata":{"m":"`+marker+`"}}`)["id"].(string)

		type tok = map[string]any
		hasura := func(role string, allowed ...string) tok {
			return tok{"x-hasura-user-id": "alice", "x-hasura-default-role": role, "x-hasura-allowed-roles": allowed,
				"x-hasura-source-account-id": "acme"}
		}
		claims := func(edit func(c jwt.MapClaims)) jwt.MapClaims {
			c := jwt.MapClaims{"sub": "alice", "iss": "https://auth.example", "aud": "nself-audit",
				"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(),
				"https://hasura.io/jwt/claims": hasura("user", "user")}
			if edit != nil {
				edit(c)
			}
			return c
		}
		signed := func(m jwt.SigningMethod, k any, c jwt.MapClaims) string {
			s, err := jwt.NewWithClaims(m, c).SignedString(k)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		valid := signed(jwt.SigningMethodRS256, key, claims(nil))
		admin := signed(jwt.SigningMethodRS256, key, claims(func(c jwt.MapClaims) {
			c["https://hasura.io/jwt/claims"] = hasura("admin", "admin", "user")
		}))
		// The valid tokens work: the refusals below are not for want of a
		// working configuration.
		if n := len(s.get("/api/v1/events", bearer(valid)).events()); n != 1 {
			t.Fatalf("valid user token reads %d events, want 1", n)
		}
		if n := len(s.get("/api/v1/events", bearer(admin)).events()); n != 2 {
			t.Fatalf("valid admin token reads %d events, want 2", n)
		}
		withHeader := func(token, name, value string) map[string]string {
			h := bearer(token)
			h[name] = value
			return h
		}
		noneAdmin, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claims(func(c jwt.MapClaims) {
			c["https://hasura.io/jwt/claims"] = hasura("admin", "admin")
		})).SignedString(jwt.UnsafeAllowNoneSignatureType)
		parts := strings.Split(valid, ".")
		tamperedClaims, _ := json.Marshal(claims(func(c jwt.MapClaims) { c["https://hasura.io/jwt/claims"] = hasura("admin", "admin") }))
		tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(tamperedClaims) + "." + parts[2]

		var attacks []attack
		add := func(name, method, path string, h map[string]string, body string, want int) {
			attacks = append(attacks, attack{name, method, path, h, body, want})
		}

		// Credentials: missing, wrong, in the query string, other schemes.
		routes := [][2]string{{"GET", "/api/v1/events"}, {"POST", "/api/v1/events"}, {"POST", "/api/v1/events/batch"},
			{"GET", "/api/v1/events/" + secretID}, {"GET", "/api/v1/stats"}, {"GET", "/api/v1/verify"},
			{"GET", "/api/v1/events/export"}, {"POST", "/api/v1/checkpoints"}, {"GET", "/api/v1/checkpoints"},
			{"GET", "/metrics"}, {"GET", "/auth/verify"}, {"GET", "/api/v1/no-such-route"}}
		body := `{"actor_id":"mallory","action":"attack.write"}`
		for _, r := range routes {
			rt := r[0] + " " + r[1]
			add("no token: "+rt, r[0], r[1], nil, body, 401)
			add("wrong token: "+rt, r[0], r[1], bearer("not-the-plugin-secret-0123456789"), body, 401)
			add("wrong X-Plugin-Secret: "+rt, r[0], r[1], map[string]string{"X-Plugin-Secret": testSecret + "x"}, body, 401)
			add("Basic scheme: "+rt, r[0], r[1], map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("x:"+testSecret))}, body, 401)
			sep := "?"
			for _, q := range []string{"token", "access_token", "X-Plugin-Secret", "authorization", "jwt"} {
				add("token in query "+q+": "+rt, r[0], r[1]+sep+q+"="+url.QueryEscape(testSecret), nil, body, 401)
			}
			add("JWT in query: "+rt, r[0], r[1]+"?access_token="+valid, nil, body, 401)
		}

		// Forged and out-of-date JWTs, and escalation by header.
		jwtAttacks := []struct {
			name  string
			h     map[string]string
			want  int
			write bool
		}{
			{"alg none", bearer(noneAdmin), 401, false},
			{"HS256 signed with the RSA public key", bearer(signed(jwt.SigningMethodHS256, pubPEM, claims(nil))), 401, false},
			{"HS512 signed with the RSA public key", bearer(signed(jwt.SigningMethodHS512, pubPEM, claims(nil))), 401, false},
			{"RS256 from another key", bearer(signed(jwt.SigningMethodRS256, other, claims(nil))), 401, false},
			{"tampered payload", bearer(tampered), 401, false},
			{"signature stripped", bearer(parts[0] + "." + parts[1] + "."), 401, false},
			{"expired", bearer(signed(jwt.SigningMethodRS256, key, claims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Minute).Unix() }))), 401, false},
			{"no exp", bearer(signed(jwt.SigningMethodRS256, key, claims(func(c jwt.MapClaims) { delete(c, "exp") }))), 401, false},
			{"not yet valid", bearer(signed(jwt.SigningMethodRS256, key, claims(func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(time.Hour).Unix() }))), 401, false},
			{"wrong issuer", bearer(signed(jwt.SigningMethodRS256, key, claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" }))), 401, false},
			{"no issuer", bearer(signed(jwt.SigningMethodRS256, key, claims(func(c jwt.MapClaims) { delete(c, "iss") }))), 401, false},
			{"wrong audience", bearer(signed(jwt.SigningMethodRS256, key, claims(func(c jwt.MapClaims) { c["aud"] = []string{"billing", "other"} }))), 401, false},
			{"no audience", bearer(signed(jwt.SigningMethodRS256, key, claims(func(c jwt.MapClaims) { delete(c, "aud") }))), 401, false},
			{"X-Hasura-Role admin outside the allowed roles", withHeader(valid, "X-Hasura-Role", "admin"), 403, false},
			{"X-Hasura-Role nself_admin outside the allowed roles", withHeader(valid, "X-Hasura-Role", "nself_admin"), 403, false},
			{"X-Hasura-Role with SQL", withHeader(valid, "X-Hasura-Role", "user' OR '1'='1"), 403, false},
			{"account switch by X-Source-Account-Id", withHeader(valid, "X-Source-Account-Id", "globex"), 403, false},
			{"account switch by X-Hasura-Source-Account-Id", withHeader(valid, "X-Hasura-Source-Account-Id", "globex"), 403, false},
			{"admin account switch by X-Source-Account-Id", withHeader(admin, "X-Source-Account-Id", "globex"), 403, false},
			{"JWT write", bearer(admin), 403, true},
			{"JWT checkpoint", bearer(admin), 403, true},
		}
		for _, a := range jwtAttacks {
			switch {
			case a.name == "JWT checkpoint":
				add(a.name, "POST", "/api/v1/checkpoints", a.h, "", a.want)
			case a.write:
				add(a.name, "POST", "/api/v1/events", a.h, body, a.want)
			default:
				add(a.name+": list", "GET", "/api/v1/events", a.h, "", a.want)
				add(a.name+": foreign event by id", "GET", "/api/v1/events/"+secretID, a.h, "", a.want)
			}
		}
		// A user may not read the whole chain.
		add("user token verify", "GET", "/api/v1/verify", bearer(valid), "", 403)
		add("user token export", "GET", "/api/v1/events/export", bearer(valid), "", 403)

		// Oversize and malformed input.
		nested := strings.Repeat("[", 400000) + strings.Repeat("]", 400000)
		add("body over 1 MiB", "POST", "/api/v1/events", pluginHeaders("acme"),
			`{"actor_id":"u","action":"a.b","metadata":{"x":"`+strings.Repeat("x", 1<<20)+`"}}`, 413)
		add("batch over 16 MiB", "POST", "/api/v1/events/batch", pluginHeaders("acme"),
			`{"events":[{"actor_id":"u","action":"a.b","metadata":{"x":"`+strings.Repeat("x", 17<<20)+`"}}]}`, 413)
		add("metadata nested 65 deep", "POST", "/api/v1/events", pluginHeaders("acme"),
			`{"actor_id":"u","action":"a.b","metadata":{"x":`+strings.Repeat("[", 65)+strings.Repeat("]", 65)+`}}`, 400)
		add("metadata nested 400000 deep", "POST", "/api/v1/events", pluginHeaders("acme"),
			`{"actor_id":"u","action":"a.b","metadata":{"x":`+nested+`}}`, 400)
		add("body nested 400000 deep", "POST", "/api/v1/events", pluginHeaders("acme"), nested, 400)
		add("batch nested 400000 deep", "POST", "/api/v1/events/batch", pluginHeaders("acme"), `{"events":`+nested+`}`, 400)
		add("metadata of 50000 members", "POST", "/api/v1/events", pluginHeaders("acme"),
			`{"actor_id":"u","action":"a.b","metadata":{`+manyMembers(50000)+`}}`, 400)
		add("header of 128 KiB", "GET", "/api/v1/events", map[string]string{"Authorization": "Bearer " + testSecret,
			"X-Padding": strings.Repeat("p", 128<<10)}, "", 431)
		add("path of 128 KiB", "GET", "/api/v1/actors/"+strings.Repeat("a", 128<<10)+"/events", pluginHeaders("acme"), "", 431)
		add("server-assigned field", "POST", "/api/v1/events", pluginHeaders("acme"), `{"actor_id":"u","action":"a.b","source_account_id":"globex"}`, 400)
		add("account header with SQL", "GET", "/api/v1/events", pluginHeaders("acme' OR '1'='1"), "", 400)

		// SQL injection in every filter, for the plugin token and a user.
		injections := []string{"' OR '1'='1", "x'; DROP TABLE np_nself_audit.np_audit_events;--", "1) OR (1=1",
			"%' OR 1=1 --", `\' OR 1=1 --`, `" OR ""="`, "$1", "'||(SELECT pg_sleep(5))||'",
			"' UNION SELECT * FROM np_nself_audit.np_audit_events --", "globex' --"}
		params := []string{"actor_id", "actor_type", "action", "resource_type", "resource_id", "outcome", "severity",
			"source", "since", "until", "limit", "sort", "cursor"}
		var injected []attack
		for _, v := range injections {
			for _, p := range params {
				for _, h := range []map[string]string{pluginHeaders("acme"), bearer(valid)} {
					injected = append(injected, attack{name: p + "=" + v, method: "GET", path: "/api/v1/events?" + p + "=" + url.QueryEscape(v), headers: h})
				}
				if p != "limit" && p != "sort" && p != "cursor" {
					injected = append(injected, attack{name: "stats " + p + "=" + v, method: "GET", path: "/api/v1/stats?" + p + "=" + url.QueryEscape(v), headers: pluginHeaders("acme")})
				}
			}
			injected = append(injected,
				attack{name: "stats interval=" + v, method: "GET", path: "/api/v1/stats?interval=" + url.QueryEscape(v), headers: pluginHeaders("acme")},
				attack{name: "actor path " + v, method: "GET", path: "/api/v1/actors/" + url.PathEscape(v) + "/events", headers: pluginHeaders("acme")},
				attack{name: "event id " + v, method: "GET", path: "/api/v1/events/" + url.PathEscape(v), headers: pluginHeaders("acme")},
				attack{name: "verify from_seq " + v, method: "GET", path: "/api/v1/verify?from_seq=" + url.QueryEscape(v), headers: pluginHeaders("acme")},
				attack{name: "checkpoints limit " + v, method: "GET", path: "/api/v1/checkpoints?limit=" + url.QueryEscape(v), headers: pluginHeaders("acme")},
			)
		}

		refused := 0
		for _, a := range attacks {
			r := s.do(a.method, a.path, a.headers, a.body)
			// A 431 comes from net/http before any handler runs: plain text.
			if r.status != a.want || (r.errorCode() == "" && a.want != 431) {
				t.Errorf("%s: %d %.200s; want %d with a JSON error", a.name, r.status, r.raw, a.want)
				continue
			}
			if strings.Contains(string(r.raw), marker) {
				t.Errorf("%s: the answer holds globex's event", a.name)
			}
			refused++
		}
		// An injection is refused (400) or matches nothing (200, empty):
		// a value is never read as SQL.
		for _, a := range injected {
			r := s.do(a.method, a.path, a.headers, "")
			switch {
			case r.status == 400 && r.errorCode() == "invalid_request":
			case r.status == 404 && strings.HasPrefix(a.name, "event id"):
			case r.status == 200 && len(r.events()) == 0 && r.body["total"] == nil:
			case r.status == 200 && r.body["total"] == 0.0:
			default:
				t.Errorf("injection %s: %d %.300s; want 400, or 200 matching nothing", a.name, r.status, r.raw)
				continue
			}
			if strings.Contains(string(r.raw), marker) {
				t.Errorf("injection %s: the answer holds globex's event", a.name)
			}
			refused++
		}

		// Nothing was written, nothing dropped: two events in acme, one in
		// globex, chains intact.
		if n := s.get("/api/v1/stats", pluginHeaders("acme")).body["total"]; n != 2.0 {
			t.Errorf("acme holds %v events after the attacks, want 2", n)
		}
		if r := s.get("/api/v1/verify", pluginHeaders("globex")); r.body["ok"] != true || r.body["checked"] != 1.0 {
			t.Errorf("globex chain after the attacks: %s", r.raw)
		}
		if refused != len(attacks)+len(injected) {
			t.Errorf("%d of %d attacks refused", refused, len(attacks)+len(injected))
		}
		t.Logf("%s: %d attack requests refused (%d credential, JWT, header and size attacks; %d SQL injection attempts), no 5xx, no foreign data, nothing written",
			store, refused, len(attacks), len(injected))
	})
}

// manyMembers is n distinct JSON object members.
func manyMembers(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%d":%d`, i, i)
	}
	return b.String()
}

// TestSlowClientAndIdleConnections: a client that sends its headers one
// byte-line a second is cut off at the read-header timeout, and a thousand
// connections that send nothing neither stop the service from answering
// others nor stay open past that timeout; afterwards the process is back
// to the goroutines it had before.
func TestSlowClientAndIdleConnections(t *testing.T) {
	t.Parallel()
	p := runProcess(t, "NSELF_AUDIT_DATA_DIR="+t.TempDir(), "PLUGIN_INTERNAL_SECRET="+testSecret)
	addr := strings.TrimPrefix(p.url, "http://")
	goroutines := func() int {
		r := p.get("/metrics", pluginHeaders(""))
		for _, line := range strings.Split(string(r.raw), "\n") {
			if v, ok := strings.CutPrefix(line, "nself_audit_go_goroutines "); ok {
				n, _ := strconv.ParseFloat(v, 64)
				return int(n)
			}
		}
		t.Fatal("no nself_audit_go_goroutines in /metrics")
		return 0
	}
	before := goroutines()

	// The slow client: a header line a second, never the blank line.
	const headerTimeout = 5 * time.Second // httpapi.NewHTTPServer's ReadHeaderTimeout
	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slowStart := time.Now()
	fmt.Fprintf(slow, "GET /api/v1/events HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n", addr, testSecret)
	slowClosed := make(chan time.Duration, 1)
	go func() {
		slow.SetReadDeadline(time.Now().Add(20 * time.Second))
		io.Copy(io.Discard, slow) // returns when the server closes
		slowClosed <- time.Since(slowStart)
	}()
	go func() {
		for i := 0; i < 15; i++ {
			time.Sleep(time.Second)
			if _, err := fmt.Fprintf(slow, "X-Drip-%d: x\r\n", i); err != nil {
				return
			}
		}
	}()

	// The idle crowd.
	const idle = 1000
	conns := make([]net.Conn, 0, idle)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	idleStart := time.Now()
	for i := 0; i < idle; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	// The service still answers, at once.
	for i := 0; i < 3; i++ {
		t0 := time.Now()
		if r := p.do("POST", "/api/v1/events", pluginHeaders("acme"), `{"actor_id":"u","action":"during.flood"}`); r.status != 201 {
			t.Fatalf("write during the idle flood: %d %s", r.status, r.raw)
		}
		if d := time.Since(t0); d > time.Second {
			t.Errorf("write during the idle flood took %v", d)
		}
	}
	during := goroutines()
	// Each idle connection is closed by the server after the header timeout.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var slowest time.Duration
	open := 0
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(idleStart.Add(headerTimeout + 5*time.Second))
			_, err := bufio.NewReader(c).ReadByte()
			mu.Lock()
			defer mu.Unlock()
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				open++
				return
			}
			slowest = max(slowest, time.Since(idleStart))
		}()
	}
	wg.Wait()
	if open > 0 {
		t.Errorf("%d of %d idle connections still open %v after they were made", open, idle, headerTimeout+5*time.Second)
	}
	select {
	case d := <-slowClosed:
		if d < headerTimeout-time.Second || d > headerTimeout+3*time.Second {
			t.Errorf("the slow client was cut after %v, want about %v", d, headerTimeout)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the slow client still holds its connection")
	}
	var after int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if after = goroutines(); after <= before+5 || time.Now().After(deadline) {
			break
		}
	}
	if after > before+5 {
		t.Errorf("goroutines: %d before, %d with %d idle connections, %d after they were cut", before, during, idle, after)
	}
	t.Logf("slow client cut at the read-header timeout; %d idle connections all closed by the server within %v (writes answered meanwhile); goroutines %d before, %d during, %d after",
		idle, slowest.Round(time.Millisecond), before, during, after)
}
