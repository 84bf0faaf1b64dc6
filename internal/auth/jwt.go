package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/nself-org/nself-audit/internal/audit"
)

// Algorithm families. An RSA key may verify any RSA algorithm: the key type,
// not the configured name, is what makes a signature trustworthy.
var (
	rsaAlgs        = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	asymmetricAlgs = append(slices.Clip(rsaAlgs), "ES256", "ES384", "ES512", "EdDSA")
	ecCurveAlg     = map[string]string{"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
)

// Roles that read every event of their account.
var readAllRoles = []string{"admin", "nself_admin"}

const defaultClaimsNamespace = "https://hasura.io/jwt/claims"

// verifyKey is a verification key and the JWT algorithms it may check. The
// list is what stops "alg: none" and an HS256 token whose HMAC secret is
// the (public) RSA key.
type verifyKey struct {
	key  any // []byte, *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
	algs []string
}

// JWTConfig is Hasura's HASURA_GRAPHQL_JWT_SECRET, parsed.
type JWTConfig struct {
	static      *verifyKey // from type+key; nil when jwkURL is set
	jwkURL      string
	namespace   string   // claims_namespace
	nsPath      []string // claims_namespace_path split at dots, used when usePath
	usePath     bool
	stringified bool // claims_format stringified_json
	issuer      string
	audience    []string
	skew        time.Duration
}

// ParseJWTConfig parses the JSON of HASURA_GRAPHQL_JWT_SECRET. Errors name
// the bad key (e.g. `"type": unsupported algorithm "XX"`). Keys this service
// does not use (claims_map, header, ...) are ignored.
func ParseJWTConfig(raw string) (*JWTConfig, error) {
	var in struct {
		Type                *string         `json:"type"`
		Key                 *string         `json:"key"`
		JWKURL              *string         `json:"jwk_url"`
		ClaimsNamespace     *string         `json:"claims_namespace"`
		ClaimsNamespacePath *string         `json:"claims_namespace_path"`
		ClaimsFormat        *string         `json:"claims_format"`
		Issuer              *string         `json:"issuer"`
		Audience            json.RawMessage `json:"audience"`
		AllowedSkew         *float64        `json:"allowed_skew"`
	}
	if err := json.Unmarshal([]byte(raw), &in); err != nil {
		if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok && te.Field != "" {
			return nil, fmt.Errorf("%q: unexpected JSON %s", te.Field, te.Value)
		}
		return nil, fmt.Errorf("invalid JSON: %v", err)
	}

	c := &JWTConfig{namespace: defaultClaimsNamespace}
	switch {
	case in.JWKURL != nil:
		if in.Key != nil {
			return nil, errors.New(`"key": not allowed together with "jwk_url"`)
		}
		u, err := url.Parse(*in.JWKURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, errors.New(`"jwk_url": want an http(s) URL`)
		}
		c.jwkURL = *in.JWKURL
	case in.Key != nil:
		if in.Type == nil {
			return nil, errors.New(`"type": required with "key"`)
		}
		k, err := staticKey(*in.Type, *in.Key)
		if err != nil {
			return nil, err
		}
		c.static = k
	default:
		return nil, errors.New(`"key": required (or "jwk_url")`)
	}

	if in.ClaimsNamespace != nil && in.ClaimsNamespacePath != nil {
		return nil, errors.New(`"claims_namespace_path": not allowed together with "claims_namespace"`)
	}
	if in.ClaimsNamespace != nil {
		c.namespace = *in.ClaimsNamespace
	}
	if in.ClaimsNamespacePath != nil {
		p, err := parseClaimsPath(*in.ClaimsNamespacePath)
		if err != nil {
			return nil, err
		}
		c.nsPath, c.usePath = p, true
	}
	if in.ClaimsFormat != nil {
		switch *in.ClaimsFormat {
		case "json":
		case "stringified_json":
			c.stringified = true
		default:
			return nil, fmt.Errorf(`"claims_format": unsupported format %q (want json or stringified_json)`, *in.ClaimsFormat)
		}
	}
	if in.Issuer != nil {
		c.issuer = *in.Issuer
	}
	if len(in.Audience) > 0 && string(in.Audience) != "null" {
		var one string
		if json.Unmarshal(in.Audience, &one) == nil {
			c.audience = []string{one}
		} else if json.Unmarshal(in.Audience, &c.audience) != nil {
			return nil, errors.New(`"audience": want a string or an array of strings`)
		}
	}
	if in.AllowedSkew != nil {
		if *in.AllowedSkew < 0 || *in.AllowedSkew > 24*60*60 {
			return nil, errors.New(`"allowed_skew": want seconds between 0 and 86400`)
		}
		c.skew = time.Duration(*in.AllowedSkew * float64(time.Second))
	}
	return c, nil
}

// parseClaimsPath supports the dotted JSON path form: "$" or "$.a.b".
func parseClaimsPath(p string) ([]string, error) {
	if p == "$" {
		return []string{}, nil
	}
	rest, ok := strings.CutPrefix(p, "$.")
	if !ok || strings.ContainsAny(rest, "[]'\"") {
		return nil, fmt.Errorf(`"claims_namespace_path": unsupported path %q (want the dotted form $.a.b)`, p)
	}
	parts := strings.Split(rest, ".")
	if slices.Contains(parts, "") {
		return nil, fmt.Errorf(`"claims_namespace_path": unsupported path %q (want the dotted form $.a.b)`, p)
	}
	return parts, nil
}

// staticKey builds the key of a "type"+"key" config and checks that the key
// type fits the algorithm.
func staticKey(typ, key string) (*verifyKey, error) {
	switch typ {
	case "HS256", "HS384", "HS512":
		if utf8.RuneCountInString(key) < 32 {
			return nil, errors.New(`"key": an HMAC key must be at least 32 characters`)
		}
		return &verifyKey{key: []byte(key), algs: []string{typ}}, nil
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "Ed25519", "EdDSA":
	default:
		return nil, fmt.Errorf(`"type": unsupported algorithm %q`, typ)
	}

	pub, err := parsePublicKeyPEM(key)
	if err != nil {
		return nil, err
	}
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		if strings.HasPrefix(typ, "RS") || strings.HasPrefix(typ, "PS") {
			return &verifyKey{key: pub, algs: rsaAlgs}, nil
		}
	case *ecdsa.PublicKey:
		if alg := ecCurveAlg[pub.Curve.Params().Name]; alg == typ {
			return &verifyKey{key: pub, algs: []string{alg}}, nil
		}
	case ed25519.PublicKey:
		if typ == "Ed25519" || typ == "EdDSA" {
			return &verifyKey{key: pub, algs: []string{"EdDSA"}}, nil
		}
	}
	return nil, fmt.Errorf(`"key": the key type does not match type %q`, typ)
}

// parsePublicKeyPEM reads a PEM public key (PKIX or PKCS#1) or certificate.
func parsePublicKeyPEM(s string) (any, error) {
	block, _ := pem.Decode([]byte(s))
	if block == nil {
		return nil, errors.New(`"key": not a PEM block`)
	}
	var (
		pub any
		err error
	)
	switch block.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			pub = cert.PublicKey
		}
	default:
		return nil, fmt.Errorf(`"key": unsupported PEM block %q (want PUBLIC KEY or CERTIFICATE)`, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf(`"key": invalid %s: %v`, block.Type, err)
	}
	return pub, nil
}

// verifyJWT checks a Hasura JWT and derives the principal from its claims.
func (a *Authenticator) verifyJWT(r *http.Request, token string) (*Principal, error) {
	cfg := a.jwt
	algs := asymmetricAlgs
	if cfg.static != nil {
		algs = cfg.static.algs
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(algs),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.skew),
	}
	if cfg.issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.issuer))
	}
	if len(cfg.audience) > 0 {
		opts = append(opts, jwt.WithAudience(cfg.audience...))
	}

	claims := jwt.MapClaims{}
	tok, err := jwt.NewParser(opts...).ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		k := cfg.static
		if k == nil {
			kid, ok := t.Header["kid"].(string)
			if !ok && t.Header["kid"] != nil {
				return nil, audit.Errorf(audit.EUNAUTHORIZED, "malformed token: kid is not a string")
			}
			var err error
			if k, err = a.keys.get(r.Context(), kid); err != nil {
				return nil, err
			}
		}
		// With a key set, WithValidMethods allows every asymmetric algorithm;
		// each key still accepts only its own.
		if alg := t.Method.Alg(); !slices.Contains(k.algs, alg) {
			return nil, audit.Errorf(audit.EUNAUTHORIZED, "token algorithm %q is not accepted", alg)
		}
		return k.key, nil
	})
	if err != nil {
		return nil, tokenError(err, tok, algs, cfg)
	}

	hc, err := hasuraClaims(claims, cfg)
	if err != nil {
		return nil, err
	}
	return jwtPrincipal(r, hc)
}

// tokenError turns a jwt library error into a client-safe *audit.Error.
// tok is the token as far as it was parsed (nil if it could not be).
func tokenError(err error, tok *jwt.Token, algs []string, cfg *JWTConfig) error {
	if ae, ok := errors.AsType[*audit.Error](err); ok {
		return ae // from the key function
	}
	msg := "invalid token"
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		msg = "malformed token"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		msg = "invalid token: unknown signing algorithm"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		// Also returned when WithValidMethods refuses the algorithm; that
		// case gets the more useful message.
		msg = "invalid token signature"
		if tok != nil && tok.Method != nil && !slices.Contains(algs, tok.Method.Alg()) {
			msg = fmt.Sprintf("token algorithm %q is not accepted", tok.Method.Alg())
		}
	case errors.Is(err, jwt.ErrTokenExpired):
		msg = "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		msg = "token not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		msg = "token issuer is not accepted"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		msg = "token audience is not accepted"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		// exp is always required, iss and aud when configured.
		var claims jwt.MapClaims
		if tok != nil {
			claims, _ = tok.Claims.(jwt.MapClaims)
		}
		if exp, _ := claims.GetExpirationTime(); exp == nil {
			msg = "token has no exp claim"
		} else if iss, _ := claims.GetIssuer(); cfg.issuer != "" && iss == "" {
			msg = "token has no iss claim"
		} else {
			msg = "token has no aud claim"
		}
	case errors.Is(err, jwt.ErrTokenInvalidClaims):
		msg = "token has invalid claims"
	}
	return audit.Errorf(audit.EUNAUTHORIZED, "%s", msg)
}

// hasuraClaims finds the Hasura claims object in the verified claims and
// returns it with lower-cased keys: Hasura matches claim names
// case-insensitively.
func hasuraClaims(claims jwt.MapClaims, cfg *JWTConfig) (map[string]any, error) {
	var v any
	if cfg.usePath {
		v = map[string]any(claims)
		for _, name := range cfg.nsPath {
			m, _ := v.(map[string]any)
			v = m[name]
		}
	} else {
		v = claims[cfg.namespace]
	}
	if s, ok := v.(string); ok && cfg.stringified {
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			return nil, audit.Errorf(audit.EUNAUTHORIZED, "token Hasura claims are not valid stringified JSON")
		}
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, audit.Errorf(audit.EUNAUTHORIZED, "token has no Hasura claims")
	}
	hc := make(map[string]any, len(m))
	for k, val := range m {
		k = strings.ToLower(k)
		if _, dup := hc[k]; dup {
			// Two spellings of one claim: refuse rather than pick one at random.
			return nil, audit.Errorf(audit.EUNAUTHORIZED, "token has claim %s twice", k)
		}
		hc[k] = val
	}
	return hc, nil
}

// jwtPrincipal applies the role and account rules to verified Hasura claims.
func jwtPrincipal(r *http.Request, hc map[string]any) (*Principal, error) {
	userID, err := claimString(hc, "x-hasura-user-id")
	if err != nil {
		return nil, err
	}
	defaultRole, err := claimString(hc, "x-hasura-default-role")
	if err != nil {
		return nil, err
	}
	account, err := claimString(hc, "x-hasura-source-account-id")
	if err != nil {
		return nil, err
	}
	allowed, err := claimStrings(hc, "x-hasura-allowed-roles")
	if err != nil {
		return nil, err
	}

	role := defaultRole
	if h := r.Header.Get(headerHasuraRole); h != "" {
		role = h
	} else if role == "" {
		return nil, audit.Errorf(audit.EUNAUTHORIZED, "token has no x-hasura-default-role")
	}
	// As in Hasura, the role in force, requested or default, must be one
	// the token allows.
	if !slices.Contains(allowed, role) {
		return nil, audit.Errorf(audit.EFORBIDDEN, "role %q is not in x-hasura-allowed-roles", audit.Clip(role, 64))
	}

	if account == "" {
		account = audit.DefaultAccount
	} else if !audit.ValidAccountID(account) {
		return nil, audit.Errorf(audit.EUNAUTHORIZED, "token has an invalid x-hasura-source-account-id")
	}
	// The account of a JWT caller comes from the token alone: a header may
	// repeat it but never widen it.
	for _, h := range []string{headerAccount, headerHasuraAccount} {
		for _, v := range r.Header.Values(h) {
			if v != account {
				return nil, audit.Errorf(audit.EFORBIDDEN, "account header does not match the token")
			}
		}
	}

	readAll := slices.Contains(readAllRoles, role)
	if !readAll && userID == "" {
		// Without a user id a non-admin caller would have no events to see,
		// or worse, match events with an empty actor.
		return nil, audit.Errorf(audit.EFORBIDDEN, "token has no x-hasura-user-id")
	}
	return &Principal{
		Kind:      "jwt",
		AccountID: account,
		Role:      role,
		UserID:    userID,
		CanWrite:  false,
		ReadAll:   readAll,
	}, nil
}

// claimString returns a string claim, "" if it is absent.
func claimString(hc map[string]any, name string) (string, error) {
	v, ok := hc[name]
	if !ok || v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", audit.Errorf(audit.EUNAUTHORIZED, "token claim %s must be a string", name)
	}
	return s, nil
}

// claimStrings returns an array-of-strings claim, nil if it is absent.
func claimStrings(hc map[string]any, name string) ([]string, error) {
	v, ok := hc[name]
	if !ok || v == nil {
		return nil, nil
	}
	list, ok := v.([]any)
	out := make([]string, 0, len(list))
	for _, e := range list {
		s, isString := e.(string)
		if !isString {
			ok = false
			break
		}
		out = append(out, s)
	}
	if !ok {
		return nil, audit.Errorf(audit.EUNAUTHORIZED, "token claim %s must be an array of strings", name)
	}
	return out, nil
}
