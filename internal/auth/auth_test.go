package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/nself-org/nself-audit/internal/audit"
)

const (
	testSecret = "plugin-secret-0123456789abcdef"
	hsKey      = "hs-key-0123456789abcdef0123456789abcdef"
)

type testKeyring struct {
	rsa, rsa2 *rsa.PrivateKey
	ec        *ecdsa.PrivateKey
	ec384     *ecdsa.PrivateKey
	ed        ed25519.PrivateKey
}

// keyring generates the test keys once per test binary: RSA generation is slow.
var keyring = sync.OnceValue(func() testKeyring {
	var k testKeyring
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if k.rsa2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		panic(err)
	}
	if k.ec384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
		panic(err)
	}
	if _, k.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		panic(err)
	}
	return k
})

func pemPublic(pub any) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func pemCert(key *rsa.PrivateKey) string {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// config builds and parses a HASURA_GRAPHQL_JWT_SECRET.
func config(t *testing.T, fields map[string]any) *JWTConfig {
	t.Helper()
	raw, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseJWTConfig(string(raw))
	if err != nil {
		t.Fatalf("ParseJWTConfig(%s): %v", raw, err)
	}
	return c
}

func sign(m jwt.SigningMethod, key any, kid string, c jwt.MapClaims) string {
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		panic(err)
	}
	return s
}

// userHasura is the Hasura claims object of an ordinary user.
func userHasura() map[string]any {
	return map[string]any{
		"x-hasura-user-id":       "u1",
		"x-hasura-default-role":  "user",
		"x-hasura-allowed-roles": []any{"user", "admin", "editor"},
	}
}

// claims returns claims valid for an hour with userHasura under the default
// namespace, after edit (if not nil) has changed them.
func claims(edit func(c jwt.MapClaims, h map[string]any)) jwt.MapClaims {
	now := time.Now()
	h := userHasura()
	c := jwt.MapClaims{
		"sub":                  "u1",
		"iat":                  now.Unix(),
		"exp":                  now.Add(time.Hour).Unix(),
		defaultClaimsNamespace: h,
	}
	if edit != nil {
		edit(c, h)
	}
	return c
}

var userPrincipal = Principal{Kind: "jwt", AccountID: "primary", Role: "user", UserID: "u1"}

var pluginPrincipalPrimary = Principal{Kind: "plugin", AccountID: "primary", Role: "plugin", CanWrite: true, ReadAll: true}

// check asserts the outcome of Authenticate: want on success, otherwise an
// *audit.Error with code whose message contains msg and no credential.
func check(t *testing.T, r *http.Request, p *Principal, err error, want *Principal, code audit.Code, msg string) {
	t.Helper()
	if code == "" {
		if err != nil {
			t.Fatalf("Authenticate: unexpected error %v", err)
		}
		if p == nil || *p != *want {
			t.Fatalf("Authenticate = %+v, want %+v", p, want)
		}
		return
	}
	if p != nil {
		t.Fatalf("Authenticate = %+v, want error %s", p, code)
	}
	var ae *audit.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %v (%T) is not an *audit.Error", err, err)
	}
	if ae.Code != code || !strings.Contains(ae.Message, msg) {
		t.Fatalf("error = %s %q, want %s containing %q", ae.Code, ae.Message, code, msg)
	}
	// Never echo a credential back to the client.
	creds := []string{testSecret, hsKey, r.Header.Get("X-Plugin-Secret")}
	if _, tok, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok {
		creds = append(creds, tok)
		if parts := strings.Split(tok, "."); len(parts) == 3 {
			creds = append(creds, parts[1], parts[2])
		}
	}
	for _, c := range creds {
		if len(c) >= 8 && strings.Contains(ae.Message, c) {
			t.Fatalf("error message %q echoes a credential", ae.Message)
		}
	}
}

type authCase struct {
	name    string
	a       *Authenticator // nil: the test's default
	target  string         // request URL; "" is /events
	headers map[string]string
	want    *Principal // on success
	code    audit.Code // "" for success
	msg     string     // substring of the error message
}

func runCases(t *testing.T, def *Authenticator, cases []authCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := tc.a
			if a == nil {
				a = def
			}
			target := tc.target
			if target == "" {
				target = "/events"
			}
			r := httptest.NewRequest(http.MethodGet, target, nil)
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			p, err := a.Authenticate(r)
			check(t, r, p, err, tc.want, tc.code, tc.msg)
		})
	}
}

func withAccount(p Principal, account string) *Principal {
	p.AccountID = account
	return &p
}

func TestPluginToken(t *testing.T) {
	t.Parallel()
	a := New(testSecret, config(t, map[string]any{"type": "HS256", "key": hsKey}), nil)
	noJWT := New(testSecret, nil, nil)
	noSecret := New("", nil, nil)
	validJWT := sign(jwt.SigningMethodHS256, []byte(hsKey), "", claims(nil))
	wrongSameLen := strings.Repeat("x", len(testSecret))
	bearer := func(s string) string { return "Bearer " + s }

	runCases(t, a, []authCase{
		{name: "bearer", headers: map[string]string{"Authorization": bearer(testSecret)}, want: &pluginPrincipalPrimary},
		{name: "bearer scheme is case-insensitive", headers: map[string]string{"Authorization": "bearer " + testSecret}, want: &pluginPrincipalPrimary},
		{name: "x-plugin-secret", headers: map[string]string{"X-Plugin-Secret": testSecret}, want: &pluginPrincipalPrimary},
		{name: "wrong bearer", headers: map[string]string{"Authorization": bearer(wrongSameLen)}, code: audit.EUNAUTHORIZED, msg: "invalid token"},
		{name: "wrong x-plugin-secret", headers: map[string]string{"X-Plugin-Secret": wrongSameLen}, code: audit.EUNAUTHORIZED, msg: "invalid plugin secret"},
		{name: "longer bearer", headers: map[string]string{"Authorization": bearer(testSecret + "x")}, code: audit.EUNAUTHORIZED, msg: "invalid token"},
		{name: "prefix bearer", headers: map[string]string{"Authorization": bearer(testSecret[:10])}, code: audit.EUNAUTHORIZED, msg: "invalid token"},
		{name: "longer x-plugin-secret", headers: map[string]string{"X-Plugin-Secret": testSecret + "x"}, code: audit.EUNAUTHORIZED, msg: "invalid plugin secret"},
		{name: "empty x-plugin-secret", headers: map[string]string{"X-Plugin-Secret": ""}, code: audit.EUNAUTHORIZED, msg: "invalid plugin secret"},
		{name: "empty bearer", headers: map[string]string{"Authorization": "Bearer "}, code: audit.EUNAUTHORIZED, msg: "invalid token"},
		{name: "basic scheme", headers: map[string]string{"Authorization": "Basic " + testSecret}, code: audit.EUNAUTHORIZED, msg: "use Bearer"},
		{name: "missing credentials", code: audit.EUNAUTHORIZED, msg: "missing credentials: send Authorization: Bearer <token> or X-Plugin-Secret"},
		{name: "query string is ignored", target: "/events?token=" + testSecret + "&X-Plugin-Secret=" + testSecret + "&access_token=" + testSecret, code: audit.EUNAUTHORIZED, msg: "missing credentials"},
		{name: "valid secret header wins over bad authorization", headers: map[string]string{"X-Plugin-Secret": testSecret, "Authorization": bearer("garbage")}, want: &pluginPrincipalPrimary},
		{name: "valid secret header wins over jwt", headers: map[string]string{"X-Plugin-Secret": testSecret, "Authorization": bearer(validJWT)}, want: &pluginPrincipalPrimary},
		{name: "wrong secret header with valid jwt", headers: map[string]string{"X-Plugin-Secret": "wrong", "Authorization": bearer(validJWT)}, code: audit.EUNAUTHORIZED, msg: "invalid plugin secret"},
		{name: "wrong secret header with valid bearer secret", headers: map[string]string{"X-Plugin-Secret": "wrong", "Authorization": bearer(testSecret)}, code: audit.EUNAUTHORIZED, msg: "invalid plugin secret"},
		{name: "jwt-looking bearer without jwt config", a: noJWT, headers: map[string]string{"Authorization": bearer(validJWT)}, code: audit.EUNAUTHORIZED, msg: "invalid token"},
		{name: "non-jwt bearer with jwt config", headers: map[string]string{"Authorization": bearer("a.b")}, code: audit.EUNAUTHORIZED, msg: "invalid token"},
		{name: "empty secret never matches empty header", a: noSecret, headers: map[string]string{"X-Plugin-Secret": ""}, code: audit.EUNAUTHORIZED, msg: "invalid plugin secret"},
		{name: "empty secret never matches empty bearer", a: noSecret, headers: map[string]string{"Authorization": "Bearer "}, code: audit.EUNAUTHORIZED, msg: "invalid token"},

		// Accounts.
		{name: "account default", headers: map[string]string{"X-Plugin-Secret": testSecret}, want: withAccount(pluginPrincipalPrimary, "primary")},
		{name: "account header", headers: map[string]string{"X-Plugin-Secret": testSecret, "X-Source-Account-ID": "acme"}, want: withAccount(pluginPrincipalPrimary, "acme")},
		{name: "hasura account header", headers: map[string]string{"Authorization": bearer(testSecret), "X-Hasura-Source-Account-Id": "t:1@x.y-z_2"}, want: withAccount(pluginPrincipalPrimary, "t:1@x.y-z_2")},
		{name: "account headers that disagree", headers: map[string]string{"X-Plugin-Secret": testSecret, "X-Source-Account-Id": "one", "X-Hasura-Source-Account-Id": "two"}, code: audit.EINVALID, msg: "name different accounts"},
		{name: "account headers that agree", headers: map[string]string{"X-Plugin-Secret": testSecret, "X-Source-Account-Id": "one", "X-Hasura-Source-Account-Id": "one"}, want: withAccount(pluginPrincipalPrimary, "one")},
		{name: "invalid account header", headers: map[string]string{"X-Plugin-Secret": testSecret, "X-Source-Account-Id": "bad account!"}, code: audit.EINVALID, msg: "X-Source-Account-Id"},
		{name: "invalid hasura account header", headers: map[string]string{"X-Plugin-Secret": testSecret, "X-Hasura-Source-Account-Id": "a/b"}, code: audit.EINVALID, msg: "X-Hasura-Source-Account-Id"},
		{name: "empty account header", headers: map[string]string{"X-Plugin-Secret": testSecret, "X-Source-Account-Id": ""}, code: audit.EINVALID, msg: "X-Source-Account-Id"},
		{name: "too long account header", headers: map[string]string{"X-Plugin-Secret": testSecret, "X-Source-Account-Id": strings.Repeat("a", 129)}, code: audit.EINVALID, msg: "X-Source-Account-Id"},
	})
}

func TestJWTAlgorithms(t *testing.T) {
	t.Parallel()
	k := keyring()
	rsaPEM := pemPublic(&k.rsa.PublicKey)
	pkcs1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)}))

	hs256 := New(testSecret, config(t, map[string]any{"type": "HS256", "key": hsKey}), nil)
	hs512 := New(testSecret, config(t, map[string]any{"type": "HS512", "key": hsKey}), nil)
	rs256 := New(testSecret, config(t, map[string]any{"type": "RS256", "key": rsaPEM}), nil)
	rsCert := New(testSecret, config(t, map[string]any{"type": "RS256", "key": pemCert(k.rsa)}), nil)
	rsPKCS1 := New(testSecret, config(t, map[string]any{"type": "RS512", "key": pkcs1}), nil)
	es256 := New(testSecret, config(t, map[string]any{"type": "ES256", "key": pemPublic(&k.ec.PublicKey)}), nil)
	ed := New(testSecret, config(t, map[string]any{"type": "Ed25519", "key": pemPublic(k.ed.Public())}), nil)
	edDSA := New(testSecret, config(t, map[string]any{"type": "EdDSA", "key": pemPublic(k.ed.Public())}), nil)

	c := claims(nil)
	none := sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", c)
	hsTok := sign(jwt.SigningMethodHS256, []byte(hsKey), "", c)
	rsTok := sign(jwt.SigningMethodRS256, k.rsa, "", c)
	parts := strings.Split(rsTok, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":9999999999,"`+defaultClaimsNamespace+`":{"x-hasura-default-role":"admin"}}`)) + "." + parts[2]
	bearer := func(s string) map[string]string { return map[string]string{"Authorization": "Bearer " + s} }

	runCases(t, nil, []authCase{
		{name: "HS256", a: hs256, headers: bearer(hsTok), want: &userPrincipal},
		{name: "HS512", a: hs512, headers: bearer(sign(jwt.SigningMethodHS512, []byte(hsKey), "", c)), want: &userPrincipal},
		{name: "HS512 token against HS256 config", a: hs256, headers: bearer(sign(jwt.SigningMethodHS512, []byte(hsKey), "", c)), code: audit.EUNAUTHORIZED, msg: `token algorithm "HS512" is not accepted`},
		{name: "HS256 wrong key", a: hs256, headers: bearer(sign(jwt.SigningMethodHS256, []byte(hsKey+"x"), "", c)), code: audit.EUNAUTHORIZED, msg: "invalid token signature"},
		{name: "RS256 public key PEM", a: rs256, headers: bearer(rsTok), want: &userPrincipal},
		{name: "RS256 certificate PEM", a: rsCert, headers: bearer(rsTok), want: &userPrincipal},
		{name: "RS512 PKCS1 PEM", a: rsPKCS1, headers: bearer(sign(jwt.SigningMethodRS512, k.rsa, "", c)), want: &userPrincipal},
		{name: "PS256 with RSA key", a: rs256, headers: bearer(sign(jwt.SigningMethodPS256, k.rsa, "", c)), want: &userPrincipal},
		{name: "RS256 other key", a: rs256, headers: bearer(sign(jwt.SigningMethodRS256, k.rsa2, "", c)), code: audit.EUNAUTHORIZED, msg: "invalid token signature"},
		{name: "RS256 tampered payload", a: rs256, headers: bearer(tampered), code: audit.EUNAUTHORIZED, msg: "invalid token signature"},
		{name: "ES256", a: es256, headers: bearer(sign(jwt.SigningMethodES256, k.ec, "", c)), want: &userPrincipal},
		{name: "ES256 token against RS256 config", a: rs256, headers: bearer(sign(jwt.SigningMethodES256, k.ec, "", c)), code: audit.EUNAUTHORIZED, msg: `token algorithm "ES256" is not accepted`},
		{name: "Ed25519", a: ed, headers: bearer(sign(jwt.SigningMethodEdDSA, k.ed, "", c)), want: &userPrincipal},
		{name: "EdDSA type", a: edDSA, headers: bearer(sign(jwt.SigningMethodEdDSA, k.ed, "", c)), want: &userPrincipal},
		{name: "alg none against HS256", a: hs256, headers: bearer(none), code: audit.EUNAUTHORIZED, msg: `token algorithm "none" is not accepted`},
		{name: "alg none against RS256", a: rs256, headers: bearer(none), code: audit.EUNAUTHORIZED, msg: `token algorithm "none" is not accepted`},
		{name: "HS256 signed with RSA public key PEM", a: rs256, headers: bearer(sign(jwt.SigningMethodHS256, []byte(rsaPEM), "", c)), code: audit.EUNAUTHORIZED, msg: `token algorithm "HS256" is not accepted`},
		{name: "malformed", a: hs256, headers: bearer("a.b.c"), code: audit.EUNAUTHORIZED, msg: "malformed token"},
	})
}

func TestJWTClaims(t *testing.T) {
	t.Parallel()
	hs := func(extra map[string]any) *Authenticator {
		f := map[string]any{"type": "HS256", "key": hsKey}
		for k, v := range extra {
			f[k] = v
		}
		return New(testSecret, config(t, f), nil)
	}
	plain := hs(nil)
	skew := hs(map[string]any{"allowed_skew": 30})
	iss := hs(map[string]any{"issuer": "https://auth.example"})
	aud := hs(map[string]any{"audience": []string{"svc-a", "svc-b"}})
	audOne := hs(map[string]any{"audience": "svc-a"})
	stringified := hs(map[string]any{"claims_format": "stringified_json"})
	ns := hs(map[string]any{"claims_namespace": "hasura"})
	path := hs(map[string]any{"claims_namespace_path": "$.hasura.claims"})
	root := hs(map[string]any{"claims_namespace_path": "$"})

	tok := func(edit func(c jwt.MapClaims, h map[string]any)) map[string]string {
		return map[string]string{"Authorization": "Bearer " + sign(jwt.SigningMethodHS256, []byte(hsKey), "", claims(edit))}
	}
	ago := func(d time.Duration) int64 { return time.Now().Add(-d).Unix() }
	moveHasura := func(to func(c jwt.MapClaims, h map[string]any)) func(c jwt.MapClaims, h map[string]any) {
		return func(c jwt.MapClaims, h map[string]any) {
			delete(c, defaultClaimsNamespace)
			to(c, h)
		}
	}

	runCases(t, plain, []authCase{
		{name: "expired", headers: tok(func(c jwt.MapClaims, _ map[string]any) { c["exp"] = ago(time.Minute) }), code: audit.EUNAUTHORIZED, msg: "token expired"},
		{name: "nbf in the future", headers: tok(func(c jwt.MapClaims, _ map[string]any) { c["nbf"] = ago(-time.Hour) }), code: audit.EUNAUTHORIZED, msg: "token not valid yet"},
		{name: "nbf in the past", headers: tok(func(c jwt.MapClaims, _ map[string]any) { c["nbf"] = ago(time.Minute) }), want: &userPrincipal},
		{name: "missing exp", headers: tok(func(c jwt.MapClaims, _ map[string]any) { delete(c, "exp") }), code: audit.EUNAUTHORIZED, msg: "token has no exp claim"},
		{name: "expired within allowed skew", a: skew, headers: tok(func(c jwt.MapClaims, _ map[string]any) { c["exp"] = ago(5 * time.Second) }), want: &userPrincipal},
		{name: "expired beyond allowed skew", a: skew, headers: tok(func(c jwt.MapClaims, _ map[string]any) { c["exp"] = ago(time.Minute) }), code: audit.EUNAUTHORIZED, msg: "token expired"},
		{name: "nbf within allowed skew", a: skew, headers: tok(func(c jwt.MapClaims, _ map[string]any) { c["nbf"] = ago(-5 * time.Second) }), want: &userPrincipal},

		{name: "issuer matches", a: iss, headers: tok(func(c jwt.MapClaims, _ map[string]any) { c["iss"] = "https://auth.example" }), want: &userPrincipal},
		{name: "wrong issuer", a: iss, headers: tok(func(c jwt.MapClaims, _ map[string]any) { c["iss"] = "https://evil.example" }), code: audit.EUNAUTHORIZED, msg: "token issuer is not accepted"},
		{name: "missing issuer", a: iss, code: audit.EUNAUTHORIZED, headers: tok(nil), msg: "token has no iss claim"},
		{name: "audience matches one of", a: aud, headers: tok(func(c jwt.MapClaims, _ map[string]any) { c["aud"] = "svc-b" }), want: &userPrincipal},
		{name: "audience array matches", a: aud, headers: tok(func(c jwt.MapClaims, _ map[string]any) { c["aud"] = []string{"x", "svc-a"} }), want: &userPrincipal},
		{name: "wrong audience", a: aud, headers: tok(func(c jwt.MapClaims, _ map[string]any) { c["aud"] = []string{"x", "y"} }), code: audit.EUNAUTHORIZED, msg: "token audience is not accepted"},
		{name: "missing audience", a: aud, headers: tok(nil), code: audit.EUNAUTHORIZED, msg: "token has no aud claim"},
		{name: "string audience config", a: audOne, headers: tok(func(c jwt.MapClaims, _ map[string]any) { c["aud"] = "svc-a" }), want: &userPrincipal},
		{name: "string audience config wrong", a: audOne, headers: tok(func(c jwt.MapClaims, _ map[string]any) { c["aud"] = "svc-b" }), code: audit.EUNAUTHORIZED, msg: "token audience is not accepted"},
		{name: "no issuer or audience configured", headers: tok(func(c jwt.MapClaims, _ map[string]any) { c["iss"], c["aud"] = "anyone", "anything" }), want: &userPrincipal},

		{name: "stringified json", a: stringified, headers: tok(func(c jwt.MapClaims, h map[string]any) {
			b, _ := json.Marshal(h)
			c[defaultClaimsNamespace] = string(b)
		}), want: &userPrincipal},
		{name: "stringified json garbage", a: stringified, headers: tok(func(c jwt.MapClaims, _ map[string]any) { c[defaultClaimsNamespace] = "{not json" }), code: audit.EUNAUTHORIZED, msg: "not valid stringified JSON"},
		{name: "string claims without stringified config", headers: tok(func(c jwt.MapClaims, h map[string]any) {
			b, _ := json.Marshal(h)
			c[defaultClaimsNamespace] = string(b)
		}), code: audit.EUNAUTHORIZED, msg: "token has no Hasura claims"},
		{name: "claims_namespace", a: ns, headers: tok(moveHasura(func(c jwt.MapClaims, h map[string]any) { c["hasura"] = h })), want: &userPrincipal},
		{name: "claims_namespace default key ignored", a: ns, headers: tok(nil), code: audit.EUNAUTHORIZED, msg: "token has no Hasura claims"},
		{name: "claims_namespace_path", a: path, headers: tok(moveHasura(func(c jwt.MapClaims, h map[string]any) {
			c["hasura"] = map[string]any{"claims": h}
		})), want: &userPrincipal},
		{name: "claims_namespace_path missing", a: path, headers: tok(nil), code: audit.EUNAUTHORIZED, msg: "token has no Hasura claims"},
		{name: "claims_namespace_path root", a: root, headers: tok(moveHasura(func(c jwt.MapClaims, h map[string]any) {
			for k, v := range h {
				c[k] = v
			}
		})), want: &userPrincipal},
		{name: "no hasura claims", headers: tok(moveHasura(func(jwt.MapClaims, map[string]any) {})), code: audit.EUNAUTHORIZED, msg: "token has no Hasura claims"},
		{name: "claim names are case-insensitive", headers: tok(func(c jwt.MapClaims, _ map[string]any) {
			c[defaultClaimsNamespace] = map[string]any{
				"X-Hasura-User-Id":       "u1",
				"X-Hasura-Default-Role":  "user",
				"X-HASURA-ALLOWED-ROLES": []any{"user"},
			}
		}), want: &userPrincipal},
		{name: "same claim twice in different case", headers: tok(func(_ jwt.MapClaims, h map[string]any) { h["X-Hasura-Default-Role"] = "admin" }), code: audit.EUNAUTHORIZED, msg: "twice"},
	})
}

func TestJWTRolesAndAccounts(t *testing.T) {
	t.Parallel()
	a := New(testSecret, config(t, map[string]any{"type": "HS256", "key": hsKey}), nil)
	tok := func(edit func(h map[string]any)) string {
		return "Bearer " + sign(jwt.SigningMethodHS256, []byte(hsKey), "", claims(func(_ jwt.MapClaims, h map[string]any) {
			if edit != nil {
				edit(h)
			}
		}))
	}
	role := func(r string) func(h map[string]any) {
		return func(h map[string]any) { h["x-hasura-default-role"] = r }
	}
	acme := func(h map[string]any) { h["x-hasura-source-account-id"] = "acme" }
	p := func(edit func(p *Principal)) *Principal {
		q := userPrincipal
		edit(&q)
		return &q
	}

	runCases(t, a, []authCase{
		{name: "user role", headers: map[string]string{"Authorization": tok(nil)}, want: &userPrincipal},
		{name: "x-hasura-role in allowed roles", headers: map[string]string{"Authorization": tok(nil), "X-Hasura-Role": "editor"},
			want: p(func(p *Principal) { p.Role = "editor" })},
		{name: "x-hasura-role admin in allowed roles", headers: map[string]string{"Authorization": tok(nil), "X-Hasura-Role": "admin"},
			want: p(func(p *Principal) { p.Role, p.ReadAll = "admin", true })},
		{name: "x-hasura-role not in allowed roles", headers: map[string]string{"Authorization": tok(nil), "X-Hasura-Role": "nself_admin"},
			code: audit.EFORBIDDEN, msg: `role "nself_admin" is not in x-hasura-allowed-roles`},
		{name: "x-hasura-role without allowed roles", headers: map[string]string{"Authorization": tok(func(h map[string]any) { delete(h, "x-hasura-allowed-roles") }), "X-Hasura-Role": "user"},
			code: audit.EFORBIDDEN, msg: "is not in x-hasura-allowed-roles"},
		{name: "allowed roles not an array", headers: map[string]string{"Authorization": tok(func(h map[string]any) { h["x-hasura-allowed-roles"] = "user" })},
			code: audit.EUNAUTHORIZED, msg: "x-hasura-allowed-roles must be an array of strings"},
		{name: "admin default role reads all", headers: map[string]string{"Authorization": tok(role("admin"))},
			want: p(func(p *Principal) { p.Role, p.ReadAll = "admin", true })},
		{name: "nself_admin reads all", headers: map[string]string{"Authorization": tok(func(h map[string]any) {
			h["x-hasura-default-role"] = "nself_admin"
			h["x-hasura-allowed-roles"] = []any{"nself_admin"}
		})}, want: p(func(p *Principal) { p.Role, p.ReadAll = "nself_admin", true })},
		{name: "default role outside allowed roles", headers: map[string]string{"Authorization": tok(func(h map[string]any) {
			h["x-hasura-default-role"] = "admin"
			h["x-hasura-allowed-roles"] = []any{"user"}
		})}, code: audit.EFORBIDDEN, msg: `role "admin" is not in x-hasura-allowed-roles`},
		{name: "admin without user id", headers: map[string]string{"Authorization": tok(func(h map[string]any) {
			h["x-hasura-default-role"] = "admin"
			delete(h, "x-hasura-user-id")
		})}, want: p(func(p *Principal) { p.Role, p.ReadAll, p.UserID = "admin", true, "" })},
		{name: "user without user id", headers: map[string]string{"Authorization": tok(func(h map[string]any) { delete(h, "x-hasura-user-id") })},
			code: audit.EFORBIDDEN, msg: "token has no x-hasura-user-id"},
		{name: "user id not a string", headers: map[string]string{"Authorization": tok(func(h map[string]any) { h["x-hasura-user-id"] = 42 })},
			code: audit.EUNAUTHORIZED, msg: "x-hasura-user-id must be a string"},
		{name: "no default role", headers: map[string]string{"Authorization": tok(func(h map[string]any) { delete(h, "x-hasura-default-role") })},
			code: audit.EUNAUTHORIZED, msg: "token has no x-hasura-default-role"},
		{name: "no default role but allowed x-hasura-role", headers: map[string]string{"Authorization": tok(func(h map[string]any) { delete(h, "x-hasura-default-role") }), "X-Hasura-Role": "user"},
			want: &userPrincipal},

		{name: "token account", headers: map[string]string{"Authorization": tok(acme)}, want: withAccount(userPrincipal, "acme")},
		{name: "token account with equal header", headers: map[string]string{"Authorization": tok(acme), "X-Source-Account-ID": "acme"}, want: withAccount(userPrincipal, "acme")},
		{name: "token account with equal hasura header", headers: map[string]string{"Authorization": tok(acme), "X-Hasura-Source-Account-Id": "acme"}, want: withAccount(userPrincipal, "acme")},
		{name: "token account with other header", headers: map[string]string{"Authorization": tok(acme), "X-Source-Account-Id": "other"},
			code: audit.EFORBIDDEN, msg: "account header does not match the token"},
		{name: "token account with other hasura header", headers: map[string]string{"Authorization": tok(acme), "X-Hasura-Source-Account-Id": "other"},
			code: audit.EFORBIDDEN, msg: "account header does not match the token"},
		{name: "default account with primary header", headers: map[string]string{"Authorization": tok(nil), "X-Source-Account-Id": "primary"}, want: &userPrincipal},
		{name: "header cannot widen default account", headers: map[string]string{"Authorization": tok(role("admin")), "X-Source-Account-Id": "acme"},
			code: audit.EFORBIDDEN, msg: "account header does not match the token"},
		{name: "invalid token account", headers: map[string]string{"Authorization": tok(func(h map[string]any) { h["x-hasura-source-account-id"] = "bad acct!" })},
			code: audit.EUNAUTHORIZED, msg: "invalid x-hasura-source-account-id"},
	})
}

// jwksServer serves a JWKS that a test can change, and counts fetches.
type jwksServer struct {
	*httptest.Server
	hits         atomic.Int32
	mu           sync.Mutex
	keys         []map[string]any
	cacheControl string
	status       int
}

func newJWKSServer(t *testing.T, keys ...map[string]any) *jwksServer {
	s := &jwksServer{keys: keys, status: http.StatusOK}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.cacheControl != "" {
			w.Header().Set("Cache-Control", s.cacheControl)
		}
		w.WriteHeader(s.status)
		json.NewEncoder(w).Encode(map[string]any{"keys": s.keys})
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(f func(s *jwksServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func withKid(m map[string]any, kid string) map[string]any {
	if kid != "" {
		m["kid"] = kid
	}
	return m
}

func rsaJWK(pub *rsa.PublicKey, kid string) map[string]any {
	return withKid(map[string]any{"kty": "RSA", "use": "sig", "n": b64u(pub.N.Bytes()), "e": b64u(big.NewInt(int64(pub.E)).Bytes())}, kid)
}

func ecJWK(pub *ecdsa.PublicKey, kid string) map[string]any {
	b, err := pub.Bytes() // 0x04 || x || y
	if err != nil {
		panic(err)
	}
	n := (len(b) - 1) / 2
	return withKid(map[string]any{"kty": "EC", "crv": pub.Curve.Params().Name, "x": b64u(b[1 : 1+n]), "y": b64u(b[1+n:])}, kid)
}

func edJWK(pub ed25519.PublicKey, kid string) map[string]any {
	return withKid(map[string]any{"kty": "OKP", "crv": "Ed25519", "x": b64u(pub)}, kid)
}

// fakeClock drives the key set's cache timing.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newJWKSAuth(t *testing.T, url string, client *http.Client) (*Authenticator, *fakeClock) {
	a := New(testSecret, config(t, map[string]any{"jwk_url": url}), client)
	clk := &fakeClock{t: time.Now()}
	a.keys.now = clk.Now
	return a, clk
}

// jwksStep is one request against a JWKS-backed Authenticator.
type jwksStep struct {
	name    string
	before  func() // changes the server or the clock first
	token   string
	code    audit.Code
	msg     string
	hits    int32 // JWKS fetches expected after the step
	account string
}

func runSteps(t *testing.T, a *Authenticator, srv *jwksServer, steps []jwksStep) {
	t.Helper()
	for _, st := range steps {
		if st.before != nil {
			st.before()
		}
		r := httptest.NewRequest(http.MethodGet, "/events", nil)
		r.Header.Set("Authorization", "Bearer "+st.token)
		p, err := a.Authenticate(r)
		t.Run(st.name, func(t *testing.T) {
			check(t, r, p, err, &userPrincipal, st.code, st.msg)
		})
		if got := srv.hits.Load(); got != st.hits {
			t.Fatalf("after %q: %d JWKS fetches, want %d", st.name, got, st.hits)
		}
	}
}

func TestJWKS(t *testing.T) {
	t.Parallel()
	k := keyring()
	c := func() jwt.MapClaims { return claims(nil) }

	t.Run("kid selection", func(t *testing.T) {
		t.Parallel()
		srv := newJWKSServer(t, rsaJWK(&k.rsa.PublicKey, "r1"), ecJWK(&k.ec.PublicKey, "e1"), edJWK(k.ed.Public().(ed25519.PublicKey), "o1"),
			ecJWK(&k.ec384.PublicKey, "e3"), map[string]any{"kty": "oct", "kid": "sym", "k": b64u([]byte(hsKey))})
		a, _ := newJWKSAuth(t, srv.URL, srv.Client())
		if n := srv.hits.Load(); n != 0 {
			t.Fatalf("New fetched the key set %d times; want lazy fetching", n)
		}
		runSteps(t, a, srv, []jwksStep{
			{name: "RS256 r1", token: sign(jwt.SigningMethodRS256, k.rsa, "r1", c()), hits: 1},
			{name: "PS384 r1", token: sign(jwt.SigningMethodPS384, k.rsa, "r1", c()), hits: 1},
			{name: "ES256 e1", token: sign(jwt.SigningMethodES256, k.ec, "e1", c()), hits: 1},
			{name: "ES384 e3", token: sign(jwt.SigningMethodES384, k.ec384, "e3", c()), hits: 1},
			{name: "EdDSA o1", token: sign(jwt.SigningMethodEdDSA, k.ed, "o1", c()), hits: 1},
			{name: "RS256 signed by r1 but naming e1", token: sign(jwt.SigningMethodRS256, k.rsa, "e1", c()), code: audit.EUNAUTHORIZED, msg: `token algorithm "RS256" is not accepted`, hits: 1},
			{name: "ES256 naming r1", token: sign(jwt.SigningMethodES256, k.ec, "r1", c()), code: audit.EUNAUTHORIZED, msg: `token algorithm "ES256" is not accepted`, hits: 1},
			{name: "RS256 signed by another key naming r1", token: sign(jwt.SigningMethodRS256, k.rsa2, "r1", c()), code: audit.EUNAUTHORIZED, msg: "invalid token signature", hits: 1},
			{name: "HS256 with symmetric jwk is refused", token: sign(jwt.SigningMethodHS256, []byte(hsKey), "sym", c()), code: audit.EUNAUTHORIZED, msg: `token algorithm "HS256" is not accepted`, hits: 1},
			{name: "alg none", token: sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "r1", c()), code: audit.EUNAUTHORIZED, msg: `token algorithm "none" is not accepted`, hits: 1},
			{name: "no kid with several keys", token: sign(jwt.SigningMethodRS256, k.rsa, "", c()), code: audit.EUNAUTHORIZED, msg: "token has no kid", hits: 1},
			{name: "unknown kid within 30 s does not refetch", token: sign(jwt.SigningMethodRS256, k.rsa, "zz", c()), code: audit.EUNAUTHORIZED, msg: "unknown key id", hits: 1},
		})
	})

	t.Run("no kid with one key", func(t *testing.T) {
		t.Parallel()
		srv := newJWKSServer(t, rsaJWK(&k.rsa.PublicKey, ""))
		a, _ := newJWKSAuth(t, srv.URL, nil)
		runSteps(t, a, srv, []jwksStep{
			{name: "RS256 without kid", token: sign(jwt.SigningMethodRS256, k.rsa, "", c()), hits: 1},
		})
	})

	t.Run("jwk alg restricts the key", func(t *testing.T) {
		t.Parallel()
		j := rsaJWK(&k.rsa.PublicKey, "r1")
		j["alg"] = "RS256"
		srv := newJWKSServer(t, j)
		a, _ := newJWKSAuth(t, srv.URL, nil)
		runSteps(t, a, srv, []jwksStep{
			{name: "RS256", token: sign(jwt.SigningMethodRS256, k.rsa, "r1", c()), hits: 1},
			{name: "PS256", token: sign(jwt.SigningMethodPS256, k.rsa, "r1", c()), code: audit.EUNAUTHORIZED, msg: `token algorithm "PS256" is not accepted`, hits: 1},
		})
	})

	t.Run("rotation", func(t *testing.T) {
		t.Parallel()
		srv := newJWKSServer(t, rsaJWK(&k.rsa.PublicKey, "r1"))
		a, clk := newJWKSAuth(t, srv.URL, nil)
		runSteps(t, a, srv, []jwksStep{
			{name: "r1", token: sign(jwt.SigningMethodRS256, k.rsa, "r1", c()), hits: 1},
			{name: "r2 right after the fetch is not refetched", before: func() {
				srv.set(func(s *jwksServer) { s.keys = []map[string]any{rsaJWK(&k.rsa2.PublicKey, "r2")} })
				clk.Add(10 * time.Second)
			}, token: sign(jwt.SigningMethodRS256, k.rsa2, "r2", c()), code: audit.EUNAUTHORIZED, msg: "unknown key id", hits: 1},
			{name: "r1 still cached", token: sign(jwt.SigningMethodRS256, k.rsa, "r1", c()), hits: 1},
			{name: "r2 after 30 s triggers a refetch", before: func() { clk.Add(21 * time.Second) },
				token: sign(jwt.SigningMethodRS256, k.rsa2, "r2", c()), hits: 2},
			{name: "r1 was rotated out", token: sign(jwt.SigningMethodRS256, k.rsa, "r1", c()), code: audit.EUNAUTHORIZED, msg: "unknown key id", hits: 2},
		})
	})

	t.Run("cache-control max-age", func(t *testing.T) {
		t.Parallel()
		srv := newJWKSServer(t, rsaJWK(&k.rsa.PublicKey, "r1"))
		srv.set(func(s *jwksServer) { s.cacheControl = "public, max-age=120" })
		a, clk := newJWKSAuth(t, srv.URL, nil)
		tok := sign(jwt.SigningMethodRS256, k.rsa, "r1", c())
		runSteps(t, a, srv, []jwksStep{
			{name: "first use fetches", token: tok, hits: 1},
			{name: "fresh at 100 s", before: func() { clk.Add(100 * time.Second) }, token: tok, hits: 1},
			{name: "stale at 121 s", before: func() { clk.Add(21 * time.Second) }, token: tok, hits: 2},
		})
	})

	t.Run("default refresh after an hour", func(t *testing.T) {
		t.Parallel()
		srv := newJWKSServer(t, rsaJWK(&k.rsa.PublicKey, "r1"))
		a, clk := newJWKSAuth(t, srv.URL, nil)
		tok := sign(jwt.SigningMethodRS256, k.rsa, "r1", c())
		runSteps(t, a, srv, []jwksStep{
			{name: "first use fetches", token: tok, hits: 1},
			{name: "fresh at 59 min", before: func() { clk.Add(59 * time.Minute) }, token: tok, hits: 1},
			{name: "stale at 61 min", before: func() { clk.Add(2 * time.Minute) }, token: tok, hits: 2},
		})
	})

	t.Run("server down", func(t *testing.T) {
		t.Parallel()
		srv := newJWKSServer(t, rsaJWK(&k.rsa.PublicKey, "r1"))
		a, _ := newJWKSAuth(t, srv.URL, nil)
		srv.Close()
		r := httptest.NewRequest(http.MethodGet, "/events", nil)
		r.Header.Set("Authorization", "Bearer "+sign(jwt.SigningMethodRS256, k.rsa, "r1", c()))
		p, err := a.Authenticate(r)
		check(t, r, p, err, nil, audit.EUNAUTHORIZED, "cannot verify token: key set unavailable")
	})

	t.Run("server error then recovery", func(t *testing.T) {
		t.Parallel()
		srv := newJWKSServer(t, rsaJWK(&k.rsa.PublicKey, "r1"))
		srv.set(func(s *jwksServer) { s.status = http.StatusInternalServerError })
		a, clk := newJWKSAuth(t, srv.URL, nil)
		tok := sign(jwt.SigningMethodRS256, k.rsa, "r1", c())
		runSteps(t, a, srv, []jwksStep{
			{name: "500", token: tok, code: audit.EUNAUTHORIZED, msg: "cannot verify token: key set unavailable", hits: 1},
			{name: "no retry within 30 s", before: func() {
				srv.set(func(s *jwksServer) { s.status = http.StatusOK })
				clk.Add(5 * time.Second)
			}, token: tok, code: audit.EUNAUTHORIZED, msg: "key set unavailable", hits: 1},
			{name: "retry after 30 s", before: func() { clk.Add(30 * time.Second) }, token: tok, hits: 2},
			{name: "stale keys survive a failed refresh", before: func() {
				srv.set(func(s *jwksServer) { s.status = http.StatusBadGateway })
				clk.Add(2 * time.Hour)
			}, token: tok, hits: 3},
		})
	})

	t.Run("no usable keys", func(t *testing.T) {
		t.Parallel()
		srv := newJWKSServer(t, map[string]any{"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"})
		a, _ := newJWKSAuth(t, srv.URL, nil)
		runSteps(t, a, srv, []jwksStep{
			{name: "only an encryption key", token: sign(jwt.SigningMethodRS256, k.rsa, "enc", c()), code: audit.EUNAUTHORIZED, msg: "key set unavailable", hits: 1},
		})
	})
}

func TestParseJWTConfig(t *testing.T) {
	t.Parallel()
	k := keyring()
	rsaPEM := pemPublic(&k.rsa.PublicKey)
	ecPEM := pemPublic(&k.ec.PublicKey)
	privDER, err := x509.MarshalPKCS8PrivateKey(k.ec)
	if err != nil {
		t.Fatal(err)
	}
	privPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}))
	js := func(m map[string]any) string {
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	errCases := []struct {
		name, raw, msg string
	}{
		{"bad JSON", `{"type":`, "invalid JSON"},
		{"empty", ``, "invalid JSON"},
		{"unsupported type", js(map[string]any{"type": "XX", "key": hsKey}), `"type": unsupported algorithm "XX"`},
		{"type is a number", `{"type": 5, "key": "x"}`, `"type": unexpected JSON number`},
		{"short HS key", js(map[string]any{"type": "HS256", "key": "0123456789abcdef0123456789abcde"}), `"key": an HMAC key must be at least 32 characters`},
		{"missing type", js(map[string]any{"key": hsKey}), `"type": required`},
		{"missing key", `{"type":"HS256"}`, `"key": required`},
		{"no PEM", js(map[string]any{"type": "RS256", "key": "not a pem"}), `"key": not a PEM block`},
		{"corrupt PEM", js(map[string]any{"type": "RS256", "key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}), `"key": invalid PUBLIC KEY`},
		{"private key PEM", js(map[string]any{"type": "ES256", "key": privPEM}), `"key": unsupported PEM block "PRIVATE KEY"`},
		{"RS256 with EC key", js(map[string]any{"type": "RS256", "key": ecPEM}), `"key": the key type does not match type "RS256"`},
		{"ES384 with P-256 key", js(map[string]any{"type": "ES384", "key": ecPEM}), `"key": the key type does not match type "ES384"`},
		{"Ed25519 with RSA key", js(map[string]any{"type": "Ed25519", "key": rsaPEM}), `"key": the key type does not match type "Ed25519"`},
		{"jwk_url not http", `{"jwk_url":"ftp://example.com/jwks"}`, `"jwk_url": want an http(s) URL`},
		{"jwk_url relative", `{"jwk_url":"/jwks"}`, `"jwk_url": want an http(s) URL`},
		{"jwk_url with key", js(map[string]any{"jwk_url": "https://x/jwks", "key": hsKey}), `"key": not allowed together with "jwk_url"`},
		{"bad claims_format", js(map[string]any{"type": "HS256", "key": hsKey, "claims_format": "xml"}), `"claims_format": unsupported format "xml"`},
		{"bracket claims path", js(map[string]any{"type": "HS256", "key": hsKey, "claims_namespace_path": "$['hasura']"}), `"claims_namespace_path": unsupported path`},
		{"claims path without $", js(map[string]any{"type": "HS256", "key": hsKey, "claims_namespace_path": "hasura.claims"}), `"claims_namespace_path": unsupported path`},
		{"claims path empty segment", js(map[string]any{"type": "HS256", "key": hsKey, "claims_namespace_path": "$.a..b"}), `"claims_namespace_path": unsupported path`},
		{"namespace and path", js(map[string]any{"type": "HS256", "key": hsKey, "claims_namespace": "a", "claims_namespace_path": "$.a"}), `"claims_namespace_path": not allowed together with "claims_namespace"`},
		{"audience number", js(map[string]any{"type": "HS256", "key": hsKey, "audience": 5}), `"audience": want a string or an array of strings`},
		{"negative skew", js(map[string]any{"type": "HS256", "key": hsKey, "allowed_skew": -1}), `"allowed_skew"`},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := ParseJWTConfig(tc.raw)
			if err == nil {
				t.Fatalf("ParseJWTConfig(%s) = %+v, want error", tc.raw, c)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q, want it to contain %q", err, tc.msg)
			}
			if strings.Contains(err.Error(), hsKey) {
				t.Fatalf("error %q echoes the key", err)
			}
		})
	}

	okCases := []struct {
		name  string
		raw   string
		check func(c *JWTConfig) bool
	}{
		{"defaults, unknown keys ignored", js(map[string]any{"type": "HS384", "key": hsKey, "claims_map": map[string]any{"x": 1}, "header": map[string]any{"type": "Cookie"}}), func(c *JWTConfig) bool {
			return c.namespace == defaultClaimsNamespace && !c.usePath && !c.stringified && c.skew == 0 && c.issuer == "" && c.audience == nil &&
				c.static != nil && len(c.static.algs) == 1 && c.static.algs[0] == "HS384"
		}},
		{"jwk_url", `{"jwk_url":"https://auth.example/.well-known/jwks.json","type":"RS256"}`, func(c *JWTConfig) bool {
			return c.jwkURL == "https://auth.example/.well-known/jwks.json" && c.static == nil
		}},
		{"all options", js(map[string]any{"type": "RS256", "key": rsaPEM, "claims_namespace_path": "$.hasura.claims", "claims_format": "stringified_json",
			"issuer": "iss", "audience": []string{"a", "b"}, "allowed_skew": 5}), func(c *JWTConfig) bool {
			return c.usePath && strings.Join(c.nsPath, "/") == "hasura/claims" && c.stringified && c.issuer == "iss" &&
				strings.Join(c.audience, ",") == "a,b" && c.skew == 5*time.Second
		}},
		{"string audience, custom namespace", js(map[string]any{"type": "HS256", "key": hsKey, "audience": "a", "claims_namespace": "ns"}), func(c *JWTConfig) bool {
			return len(c.audience) == 1 && c.audience[0] == "a" && c.namespace == "ns"
		}},
	}
	for _, tc := range okCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := ParseJWTConfig(tc.raw)
			if err != nil {
				t.Fatalf("ParseJWTConfig: %v", err)
			}
			if !tc.check(c) {
				t.Fatalf("ParseJWTConfig = %+v: unexpected fields", c)
			}
		})
	}
}

func TestContext(t *testing.T) {
	t.Parallel()
	if p, ok := FromContext(context.Background()); ok || p != nil {
		t.Fatalf("FromContext(empty) = %v, %v; want nil, false", p, ok)
	}
	want := &Principal{Kind: "plugin", AccountID: "acme"}
	got, ok := FromContext(NewContext(context.Background(), want))
	if !ok || got != want {
		t.Fatalf("FromContext = %v, %v; want %v, true", got, ok, want)
	}
	if _, ok := FromContext(NewContext(context.Background(), nil)); ok {
		t.Fatal("FromContext reports a nil principal as present")
	}
}

// TestJWKSCachedKeyDoesNotWait: while a fetch for an unknown kid hangs, a
// token whose key is cached and fresh is verified at once.
func TestJWKSCachedKeyDoesNotWait(t *testing.T) {
	t.Parallel()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	srv := newJWKSServer(t, rsaJWK(&key.PublicKey, "k1"))
	ks := newKeySet(srv.URL, srv.Client())
	base := time.Now()
	ks.now = func() time.Time { return base }
	ctx := context.Background()
	if k, err := ks.get(ctx, "k1"); err != nil || k == nil {
		t.Fatalf("first get: %v", err)
	}
	ks.mu.Lock()
	ks.now = func() time.Time { return base.Add(time.Minute) } // past the refetch interval, cache still fresh
	ks.mu.Unlock()

	srv.mu.Lock() // the next fetch hangs until released
	done := make(chan error, 1)
	go func() {
		_, err := ks.get(ctx, "k2")
		done <- err
	}()
	for srv.hits.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	k, err := ks.get(ctx, "k1")
	elapsed := time.Since(start)
	srv.mu.Unlock()
	if err := <-done; err == nil {
		t.Error("the unknown kid was accepted")
	}
	if err != nil || k == nil || elapsed > 500*time.Millisecond {
		t.Fatalf("cached key during a hanging fetch: %v after %v", err, elapsed)
	}
}
