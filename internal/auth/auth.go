// Package auth turns the credentials of an HTTP request into a Principal.
//
// Two kinds of caller exist: other services of the stack, which hold the
// plugin token and may write, and end users or admins, who present the
// Hasura JWT of their session and may only read.
package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
	"time"

	"github.com/nself-org/nself-audit/internal/audit"
)

// Principal is who is calling and what they may do.
type Principal struct {
	Kind      string // "plugin" (plugin token) or "jwt" (Hasura JWT)
	AccountID string // the account (source_account_id) the caller acts for
	Role      string // "plugin" for the plugin token; the Hasura role for a JWT
	UserID    string // x-hasura-user-id for a JWT; "" for the plugin token
	CanWrite  bool   // true only for the plugin token
	ReadAll   bool   // true: reads every event of AccountID; false: only events whose actor_id == UserID
}

// Request headers read by Authenticate.
const (
	headerPluginSecret  = "X-Plugin-Secret"
	headerAccount       = "X-Source-Account-Id"
	headerHasuraAccount = "X-Hasura-Source-Account-Id"
	headerHasuraRole    = "X-Hasura-Role"
)

// Authenticator checks request credentials. It is safe for concurrent use.
type Authenticator struct {
	secretSum [sha256.Size]byte
	hasSecret bool
	jwt       *JWTConfig
	keys      *keySet // nil unless jwt uses jwk_url
}

// New returns an Authenticator. secret is the plugin token (non-empty; an
// empty secret disables the plugin token rather than accepting empty
// credentials). jwt may be nil (JWT disabled). client is used to fetch
// jwk_url (nil: a client with a 10 s timeout). New does no network I/O.
func New(secret string, jwt *JWTConfig, client *http.Client) *Authenticator {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	a := &Authenticator{
		secretSum: sha256.Sum256([]byte(secret)),
		hasSecret: secret != "",
		jwt:       jwt,
	}
	if jwt != nil && jwt.jwkURL != "" {
		a.keys = newKeySet(jwt.jwkURL, client)
	}
	return a
}

// Authenticate reads the credentials of r. It returns an *audit.Error on
// failure: EUNAUTHORIZED, EFORBIDDEN, or EINVALID for a malformed account
// header. Credentials in the query string are never read: URLs end up in
// access logs.
func (a *Authenticator) Authenticate(r *http.Request) (*Principal, error) {
	// A plugin secret header is checked first and decides alone: a valid one
	// wins over any Authorization header, a wrong one is refused even if an
	// Authorization header would have been acceptable.
	if vs, ok := r.Header[headerPluginSecret]; ok {
		if v, ok := single(vs); ok && a.isSecret(v) {
			return pluginPrincipal(r)
		}
		return nil, audit.Errorf(audit.EUNAUTHORIZED, "invalid plugin secret")
	}

	authz := r.Header.Get("Authorization")
	if authz == "" {
		return nil, audit.Errorf(audit.EUNAUTHORIZED, "missing credentials: send Authorization: Bearer <token> or X-Plugin-Secret")
	}
	scheme, token, _ := strings.Cut(authz, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return nil, audit.Errorf(audit.EUNAUTHORIZED, "unsupported authorization scheme: use Bearer")
	}
	token = strings.TrimSpace(token)
	if a.isSecret(token) {
		return pluginPrincipal(r)
	}
	if a.jwt != nil && strings.Count(token, ".") == 2 {
		return a.verifyJWT(r, token)
	}
	return nil, audit.Errorf(audit.EUNAUTHORIZED, "invalid token")
}

// isSecret compares SHA-256 digests in constant time, so neither the content
// nor the length of the secret leaks through timing.
func (a *Authenticator) isSecret(s string) bool {
	if !a.hasSecret || s == "" {
		return false
	}
	sum := sha256.Sum256([]byte(s))
	return subtle.ConstantTimeCompare(sum[:], a.secretSum[:]) == 1
}

// pluginPrincipal is the principal of a caller holding the plugin token. The
// plugin token is trusted to act for any account, so the account comes from
// the request headers.
func pluginPrincipal(r *http.Request) (*Principal, error) {
	account := ""
	for _, h := range []string{headerAccount, headerHasuraAccount} {
		vs, ok := r.Header[h]
		if !ok {
			continue
		}
		// Present but empty is refused rather than defaulted: it is usually an
		// unset variable on the caller's side, and writing such events to the
		// default account would file them under the wrong tenant.
		v, ok := single(vs)
		if !ok || !audit.ValidAccountID(v) {
			return nil, audit.Errorf(audit.EINVALID, "invalid %s header: want one value of 1-128 characters of A-Z a-z 0-9 _ . : @ -", h)
		}
		if account != "" && account != v {
			return nil, audit.Errorf(audit.EINVALID, "%s and %s name different accounts", headerAccount, headerHasuraAccount)
		}
		account = v
	}
	if account == "" {
		account = audit.DefaultAccount
	}
	return &Principal{
		Kind:      "plugin",
		AccountID: account,
		Role:      "plugin",
		CanWrite:  true,
		ReadAll:   true,
	}, nil
}

// single returns the value of a header given once, or several times with
// the same value (as proxies sometimes repeat headers).
func single(vs []string) (string, bool) {
	if len(vs) == 0 {
		return "", false
	}
	for _, v := range vs[1:] {
		if v != vs[0] {
			return "", false
		}
	}
	return vs[0], true
}
