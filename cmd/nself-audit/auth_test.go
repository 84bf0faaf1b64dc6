package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const hsKey = "an-hs256-key-of-at-least-32-characters!!"

type claims struct {
	user, role, account string
	allowed             []string
	exp                 time.Time
}

func (c claims) mapClaims() jwt.MapClaims {
	ns := map[string]any{
		"x-hasura-user-id":       c.user,
		"x-hasura-default-role":  c.role,
		"x-hasura-allowed-roles": c.allowed,
	}
	if c.account != "" {
		ns["x-hasura-source-account-id"] = c.account
	}
	exp := c.exp
	if exp.IsZero() {
		exp = time.Now().Add(time.Hour)
	}
	return jwt.MapClaims{"sub": c.user, "exp": exp.Unix(), "https://hasura.io/jwt/claims": ns}
}

func hsToken(t *testing.T, c claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c.mapClaims()).SignedString([]byte(hsKey))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func bearer(token string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + token}
}

// TestAuthRequired: every route but the probes answers 401 without valid
// credentials, unknown routes included, and credentials in the query string
// are not read.
func TestAuthRequired(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		paths := []struct{ method, path string }{
			{"POST", "/api/v1/events"}, {"GET", "/api/v1/events"}, {"GET", "/api/v1/events/01900000-0000-7000-8000-000000000001"},
			{"GET", "/api/v1/actors/u1/events"}, {"GET", "/api/v1/stats"}, {"GET", "/api/v1/unknown"}, {"DELETE", "/api/v1/events"},
			{"GET", "/index.html"}, {"GET", "/ui/nothing.js"}, {"GET", "/api/v1//events"}, {"GET", "/api//v1/stats"}, {"GET", "/api/v1/x/../events"},
		}
		wrong := []map[string]string{
			nil,
			{"Authorization": "Bearer wrong-secret"},
			{"Authorization": "Bearer " + testSecret + "x"},
			{"Authorization": "Basic " + testSecret},
			{"X-Plugin-Secret": "wrong"},
			{"X-Plugin-Secret": testSecret[:len(testSecret)-1]},
			{"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"},
		}
		for _, p := range paths {
			for _, h := range wrong {
				r := s.do(p.method, p.path, h, `{"actor_id":"u","action":"a.b"}`)
				if r.status != 401 || r.errorCode() != "unauthorized" || r.header.Get("WWW-Authenticate") == "" {
					t.Errorf("%s %s with %v: %d %s", p.method, p.path, h, r.status, r.raw)
				}
			}
			r := s.do(p.method, p.path+"?token="+testSecret, nil, "")
			if r.status != 401 {
				t.Errorf("%s %s with the token in the query: %d", p.method, p.path, r.status)
			}
		}
		// Both token headers work.
		for _, h := range []map[string]string{{"Authorization": "Bearer " + testSecret}, {"X-Plugin-Secret": testSecret}} {
			if r := s.do("POST", "/api/v1/events", h, `{"actor_id":"u","action":"a.b"}`); r.status != 201 {
				t.Errorf("%v: %d %s", h, r.status, r.raw)
			}
		}
		// Account header spellings.
		for _, name := range []string{"X-Source-Account-Id", "X-Source-Account-ID", "X-Hasura-Source-Account-Id"} {
			h := map[string]string{"X-Plugin-Secret": testSecret, name: "acme"}
			if r := s.do("POST", "/api/v1/events", h, `{"actor_id":"u","action":"a.b"}`); r.status != 201 || r.body["source_account_id"] != "acme" {
				t.Errorf("%s: %d %s", name, r.status, r.raw)
			}
		}
		if r := s.get("/api/v1/events", pluginHeaders("")); len(r.events()) != 2 || r.events()[0]["source_account_id"] != "primary" {
			t.Errorf("default account: %s", r.raw)
		}
	})
}

// TestJWTRoles: with a Hasura JWT, admins read their whole account, other
// roles only their own events, nobody writes, and no header widens the
// account or the role.
func TestJWTRoles(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store, withJWT(`{"type":"HS256","key":"`+hsKey+`"}`))
		for _, body := range []string{
			`{"actor_id":"alice","action":"doc.read"}`,
			`{"actor_id":"alice","action":"doc.write"}`,
			`{"actor_id":"bob","action":"doc.read"}`,
		} {
			s.post("acme", body)
		}
		bobID := s.post("acme", `{"actor_id":"bob","action":"doc.delete"}`)["id"].(string)
		s.post("globex", `{"actor_id":"alice","action":"doc.read"}`)

		admin := hsToken(t, claims{user: "root", role: "admin", account: "acme", allowed: []string{"admin", "user"}})
		nselfAdmin := hsToken(t, claims{user: "root", role: "nself_admin", account: "acme", allowed: []string{"nself_admin"}})
		alice := hsToken(t, claims{user: "alice", role: "user", account: "acme", allowed: []string{"user", "admin"}})
		aliceNoAdmin := hsToken(t, claims{user: "alice", role: "user", account: "acme", allowed: []string{"user"}})
		noAccount := hsToken(t, claims{user: "alice", role: "admin", allowed: []string{"admin"}})
		expired := hsToken(t, claims{user: "root", role: "admin", account: "acme", allowed: []string{"admin"}, exp: time.Now().Add(-time.Minute)})

		count := func(token string, extra map[string]string, path string) int {
			h := bearer(token)
			for k, v := range extra {
				h[k] = v
			}
			return len(s.get(path, h).events())
		}
		if n := count(admin, nil, "/api/v1/events"); n != 4 {
			t.Errorf("admin sees %d, want 4", n)
		}
		if n := count(nselfAdmin, nil, "/api/v1/events"); n != 4 {
			t.Errorf("nself_admin sees %d, want 4", n)
		}
		if n := count(alice, nil, "/api/v1/events"); n != 2 {
			t.Errorf("alice (user) sees %d, want 2", n)
		}
		if n := count(alice, nil, "/api/v1/actors/bob/events"); n != 0 {
			t.Errorf("alice reads bob's events through the actor route: %d", n)
		}
		if n := count(alice, nil, "/api/v1/events?actor_id=bob"); n != 0 {
			t.Errorf("alice reads bob's events through a filter: %d", n)
		}
		if r := s.do("GET", "/api/v1/events/"+bobID, bearer(alice), ""); r.status != 404 {
			t.Errorf("alice reads bob's event by id: %d", r.status)
		}
		if r := s.get("/api/v1/stats", bearer(alice)); r.body["total"] != 2.0 {
			t.Errorf("alice's stats total %v, want 2", r.body["total"])
		}
		// Switching to an allowed role widens; to a role not allowed is 403.
		if n := count(alice, map[string]string{"X-Hasura-Role": "admin"}, "/api/v1/events"); n != 4 {
			t.Errorf("alice as admin sees %d, want 4", n)
		}
		if r := s.do("GET", "/api/v1/events", map[string]string{"Authorization": "Bearer " + aliceNoAdmin, "X-Hasura-Role": "admin"}, ""); r.status != 403 {
			t.Errorf("role outside allowed roles: %d %s", r.status, r.raw)
		}
		// The account comes from the token; a header naming another is refused.
		if r := s.do("GET", "/api/v1/events", map[string]string{"Authorization": "Bearer " + admin, "X-Source-Account-Id": "globex"}, ""); r.status != 403 {
			t.Errorf("account switch by header: %d %s", r.status, r.raw)
		}
		if n := count(admin, map[string]string{"X-Source-Account-Id": "acme"}, "/api/v1/events"); n != 4 {
			t.Errorf("matching account header: %d", n)
		}
		if n := count(noAccount, nil, "/api/v1/events"); n != 0 {
			t.Errorf("token without account claim reads %d events of 'primary', want 0", n)
		}
		// JWT callers do not write.
		if r := s.do("POST", "/api/v1/events", bearer(admin), `{"actor_id":"root","action":"a.b"}`); r.status != 403 || r.errorCode() != "forbidden" {
			t.Errorf("JWT write: %d %s", r.status, r.raw)
		}
		if r := s.do("GET", "/api/v1/events", bearer(expired), ""); r.status != 401 || !strings.Contains(r.errorMessage(), "expired") {
			t.Errorf("expired token: %d %s", r.status, r.raw)
		}
		// alg none, and a token signed with another key.
		none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claims{user: "root", role: "admin", account: "acme", allowed: []string{"admin"}}.mapClaims()).SignedString(jwt.UnsafeAllowNoneSignatureType)
		other, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims{user: "root", role: "admin", account: "acme", allowed: []string{"admin"}}.mapClaims()).SignedString([]byte(hsKey + "x"))
		for name, tok := range map[string]string{"alg none": none, "wrong key": other} {
			if r := s.do("GET", "/api/v1/events", bearer(tok), ""); r.status != 401 {
				t.Errorf("%s: %d %s", name, r.status, r.raw)
			}
		}
		// The plugin token still works next to JWT.
		if r := s.get("/api/v1/events", pluginHeaders("acme")); len(r.events()) != 4 {
			t.Errorf("plugin token with JWT configured: %s", r.raw)
		}
	})
}

// TestJWTRS256: RS256 tokens verify against a PEM public key, and an HS256
// token that uses the public key as its HMAC secret is refused.
func TestJWTRS256(t *testing.T) {
	t.Parallel()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	cfg, _ := json.Marshal(map[string]string{"type": "RS256", "key": string(pubPEM)})
	s := start(t, "postgres", withJWT(string(cfg)))
	s.post("acme", `{"actor_id":"alice","action":"doc.read"}`)
	s.post("acme", `{"actor_id":"bob","action":"doc.read"}`)

	c := claims{user: "alice", role: "user", account: "acme", allowed: []string{"user"}}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodRS256, c.mapClaims()).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	r := s.get("/api/v1/events", bearer(tok))
	if evs := r.events(); len(evs) != 1 || evs[0]["actor_id"] != "alice" {
		t.Fatalf("RS256 user token: %s", r.raw)
	}
	confused, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, c.mapClaims()).SignedString(pubPEM)
	if r := s.do("GET", "/api/v1/events", bearer(confused), ""); r.status != http.StatusUnauthorized {
		t.Fatalf("HS256 signed with the RSA public key: %d %s", r.status, r.raw)
	}
}

// TestJWTRS256Admin: an admin role with an RS256 token reads the whole
// account (the user role is in TestJWTRS256).
func TestJWTRS256Admin(t *testing.T) {
	t.Parallel()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	cfg, _ := json.Marshal(map[string]string{"type": "RS256", "key": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))})
	s := start(t, "sqlite", withJWT(string(cfg)))
	s.post("acme", `{"actor_id":"alice","action":"doc.read"}`)
	s.post("acme", `{"actor_id":"bob","action":"doc.read"}`)
	tok, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims{user: "root", role: "admin", account: "acme", allowed: []string{"admin"}}.mapClaims()).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	if evs := s.get("/api/v1/events", bearer(tok)).events(); len(evs) != 2 {
		t.Fatalf("RS256 admin sees %d events, want 2", len(evs))
	}
	if r := s.do("POST", "/api/v1/events", bearer(tok), `{"actor_id":"root","action":"a.b"}`); r.status != 403 {
		t.Fatalf("RS256 admin writes: %d", r.status)
	}
}

// TestAuthVerify: the auth_request target answers 200 with the principal
// in headers for a valid token or JWT, 401 or 403 otherwise.
func TestAuthVerify(t *testing.T) {
	t.Parallel()
	s := start(t, "sqlite", withJWT(`{"type":"HS256","key":"`+hsKey+`"}`))
	r := s.do("GET", "/auth/verify", pluginHeaders("acme"), "")
	if r.status != 200 || r.header.Get("X-Auth-Kind") != "plugin" || r.header.Get("X-Auth-Account-Id") != "acme" || r.body["account_id"] != "acme" {
		t.Fatalf("plugin token: %d %v %s", r.status, r.header, r.raw)
	}
	user := hsToken(t, claims{user: "alice", role: "user", account: "globex", allowed: []string{"user"}})
	r = s.do("GET", "/auth/verify", bearer(user), "")
	if r.status != 200 || r.header.Get("X-Auth-Role") != "user" || r.header.Get("X-Auth-User-Id") != "alice" || r.header.Get("X-Auth-Account-Id") != "globex" {
		t.Fatalf("JWT: %d %v", r.status, r.header)
	}
	for _, h := range []map[string]string{nil, {"Authorization": "Bearer nope"}, {"X-Plugin-Secret": "nope"}} {
		if r := s.do("GET", "/auth/verify", h, ""); r.status != 401 || r.header.Get("X-Auth-Kind") != "" {
			t.Errorf("%v: %d %v", h, r.status, r.header)
		}
	}
	h := bearer(user)
	h["X-Hasura-Role"] = "admin"
	if r := s.do("GET", "/auth/verify", h, ""); r.status != 403 {
		t.Errorf("role outside the token's: %d", r.status)
	}
	// auth_request knows only 2xx, 401 and 403.
	bad := pluginHeaders("")
	bad["X-Source-Account-Id"] = "not ok!"
	if r := s.do("GET", "/auth/verify", bad, ""); r.status != 403 {
		t.Errorf("malformed account header: %d, want 403", r.status)
	}
}

// TestRepeatedHeaders: a header a proxy repeated with the same value is
// accepted; repeated with different values it is refused.
func TestRepeatedHeaders(t *testing.T) {
	t.Parallel()
	s := start(t, "sqlite")
	send := func(secrets, accounts []string) int {
		req, _ := http.NewRequest("GET", s.url+"/api/v1/events", nil)
		for _, v := range secrets {
			req.Header.Add("X-Plugin-Secret", v)
		}
		for _, v := range accounts {
			req.Header.Add("X-Source-Account-Id", v)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, c := range []struct {
		secrets, accounts []string
		want              int
	}{
		{[]string{testSecret, testSecret}, []string{"acme", "acme"}, 200},
		{[]string{testSecret, "other"}, nil, 401},
		{[]string{testSecret}, []string{"acme", "globex"}, 400},
	} {
		if got := send(c.secrets, c.accounts); got != c.want {
			t.Errorf("secrets %d, accounts %v: %d, want %d", len(c.secrets), c.accounts, got, c.want)
		}
	}
}
