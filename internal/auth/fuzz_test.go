package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/nself-org/nself-audit/internal/audit"
)

// FuzzAuthenticate runs any bearer token, plugin secret header, role
// header and account header through Authenticate, with an HS256 JWT
// configuration that names an issuer and an audience. Whatever the input:
// no panic; a refusal is a client-safe 401, 403 or 400 that echoes no
// credential; a plugin principal only for the exact secret; a JWT principal
// only for a token whose HMAC-SHA256 over header.payload, computed here
// independently of the JWT library, matches, whose header says HS256, and
// whose account and role come from its own claims. The seeds (here and in
// testdata/fuzz) hold valid tokens and the usual attacks: alg none, other
// algorithms, a wrong key, expired and future tokens, a wrong issuer or
// audience, a role outside the allowed ones, another account by header.
func FuzzAuthenticate(f *testing.F) {
	cfg, err := ParseJWTConfig(`{"type":"HS256","key":"` + hsKey + `","issuer":"https://auth.example","audience":"nself"}`)
	if err != nil {
		f.Fatal(err)
	}
	a := New(testSecret, cfg, nil)
	good := func(edit func(jwt.MapClaims, map[string]any)) string {
		return sign(jwt.SigningMethodHS256, []byte(hsKey), "", claims(func(c jwt.MapClaims, h map[string]any) {
			c["iss"], c["aud"] = "https://auth.example", "nself"
			h["x-hasura-source-account-id"] = "acme"
			if edit != nil {
				edit(c, h)
			}
		}))
	}
	f.Add("Bearer "+good(nil), "", "", "")
	f.Add("Bearer "+good(nil), "", "admin", "acme")
	f.Add("Bearer "+good(nil), "", "superuser", "")
	f.Add("Bearer "+good(nil), "", "", "globex")
	f.Add("Bearer "+good(func(c jwt.MapClaims, _ map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() }), "", "", "")
	f.Add("Bearer "+good(func(c jwt.MapClaims, _ map[string]any) { c["nbf"] = time.Now().Add(time.Hour).Unix() }), "", "", "")
	f.Add("Bearer "+good(func(c jwt.MapClaims, _ map[string]any) { c["iss"] = "https://evil.example" }), "", "", "")
	f.Add("Bearer "+good(func(c jwt.MapClaims, _ map[string]any) { c["aud"] = "other" }), "", "", "")
	f.Add("Bearer "+sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", claims(nil)), "", "", "")
	f.Add("Bearer "+sign(jwt.SigningMethodHS512, []byte(hsKey), "", claims(nil)), "", "", "")
	f.Add("Bearer "+sign(jwt.SigningMethodHS256, []byte(hsKey+"x"), "", claims(nil)), "", "", "")
	f.Add("Bearer "+testSecret, "", "", "acme")
	f.Add("", testSecret, "", "")
	f.Add("", testSecret+"x", "", "")
	f.Add("Basic "+testSecret, "", "", "")
	f.Fuzz(func(t *testing.T, authz, secretHeader, role, account string) {
		r := httptest.NewRequest(http.MethodGet, "/api/v1/events", nil)
		set := func(name, v string) {
			if v != "" {
				r.Header[name] = []string{v} // as sent, without canonicalizing the value
			}
		}
		set("Authorization", authz)
		set("X-Plugin-Secret", secretHeader)
		set("X-Hasura-Role", role)
		set("X-Source-Account-Id", account)
		p, err := a.Authenticate(r)
		if err != nil {
			if p != nil {
				t.Fatal("a principal and an error")
			}
			switch audit.ErrorCode(err) {
			case audit.EUNAUTHORIZED, audit.EFORBIDDEN, audit.EINVALID:
			default:
				t.Fatalf("refusal %v is not a 401, 403 or 400", err)
			}
			msg := audit.ErrorMessage(err)
			if !utf8.ValidString(msg) || len(msg) > 1024 {
				t.Fatalf("refusal message %q is not UTF-8 or too long", msg)
			}
			for _, c := range []string{testSecret, hsKey} {
				if strings.Contains(msg, c) {
					t.Fatalf("refusal %q echoes a credential", msg)
				}
			}
			if _, tok, ok := strings.Cut(authz, " "); ok && len(tok) >= 16 && strings.Contains(msg, tok) {
				t.Fatalf("refusal %q echoes the token", msg)
			}
			return
		}
		switch p.Kind {
		case "plugin":
			_, tok, _ := strings.Cut(authz, " ")
			if secretHeader != testSecret && strings.TrimSpace(tok) != testSecret {
				t.Fatalf("plugin principal without the secret: %q %q", authz, secretHeader)
			}
			if !p.CanWrite || !p.ReadAll || !audit.ValidAccountID(p.AccountID) {
				t.Fatalf("plugin principal %+v", p)
			}
		case "jwt":
			_, tok, _ := strings.Cut(authz, " ")
			checkSignedHS256(t, strings.TrimSpace(tok), p)
			if p.CanWrite {
				t.Fatal("a JWT principal may write")
			}
			if role != "" && p.Role != role {
				t.Fatalf("role header %q, principal role %q", role, p.Role)
			}
			if account != "" && account != p.AccountID {
				t.Fatalf("account header %q widened the token's account to %q", account, p.AccountID)
			}
			if p.ReadAll != slices.Contains(readAllRoles, p.Role) || (!p.ReadAll && p.UserID == "") {
				t.Fatalf("JWT principal %+v", p)
			}
		default:
			t.Fatalf("principal of kind %q", p.Kind)
		}
	})
}

// checkSignedHS256 fails unless tok is header.payload.signature with an
// HS256 header, a signature that is the HMAC-SHA256 of header.payload under
// hsKey, and claims (iss, aud, exp, nbf, Hasura namespace) that grant p.
func checkSignedHS256(t *testing.T, tok string, p *Principal) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("JWT principal from %q", tok)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	mac := hmac.New(sha256.New, []byte(hsKey))
	mac.Write([]byte(parts[0] + "." + parts[1]))
	if err != nil || !hmac.Equal(sig, mac.Sum(nil)) {
		t.Fatalf("JWT principal from a token not signed with the key: %q", tok)
	}
	var header struct{ Alg string }
	hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if json.Unmarshal(hb, &header) != nil || header.Alg != "HS256" {
		t.Fatalf("JWT principal from a token with header %s", hb)
	}
	var c struct {
		Iss    string
		Aud    any
		Exp    *float64
		Nbf    *float64
		Hasura map[string]any `json:"https://hasura.io/jwt/claims"`
	}
	pb, _ := base64.RawURLEncoding.DecodeString(parts[1])
	if err := json.Unmarshal(pb, &c); err != nil {
		t.Fatalf("JWT principal from a payload that is not JSON: %s", pb)
	}
	now := float64(time.Now().Unix())
	switch {
	case c.Iss != "https://auth.example":
		t.Fatalf("JWT principal with issuer %q", c.Iss)
	case c.Aud != "nself" && !slices.Contains(anySlice(c.Aud), any("nself")):
		t.Fatalf("JWT principal with audience %v", c.Aud)
	case c.Exp == nil || *c.Exp < now-60:
		t.Fatalf("JWT principal from an expired token (exp %v)", c.Exp)
	case c.Nbf != nil && *c.Nbf > now+60:
		t.Fatalf("JWT principal from a token not valid yet (nbf %v)", *c.Nbf)
	}
	claimed := map[string]any{}
	for k, v := range c.Hasura {
		claimed[strings.ToLower(k)] = v
	}
	if acc, _ := claimed["x-hasura-source-account-id"].(string); acc != p.AccountID && !(acc == "" && p.AccountID == audit.DefaultAccount) {
		t.Fatalf("principal account %q, token claims %q", p.AccountID, acc)
	}
	if !slices.Contains(anySlice(claimed["x-hasura-allowed-roles"]), any(p.Role)) {
		t.Fatalf("principal role %q is not among the token's allowed roles %v", p.Role, claimed["x-hasura-allowed-roles"])
	}
}

func anySlice(v any) []any {
	s, _ := v.([]any)
	return s
}
