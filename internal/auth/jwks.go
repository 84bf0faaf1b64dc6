package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nself-org/nself-audit/internal/audit"
)

const (
	// jwksMinInterval bounds how often the key set is fetched, so a flood of
	// tokens with made-up kids cannot turn us into a load generator against
	// the auth service.
	jwksMinInterval = 30 * time.Second
	jwksDefaultTTL  = time.Hour      // without Cache-Control max-age
	jwksMaxTTL      = 24 * time.Hour // keeps a huge max-age from overflowing
	jwksMaxBody     = 1 << 20
)

// keySet is the cached JWKS behind jwk_url. It is fetched lazily, on the
// first token that needs it.
type keySet struct {
	url    string
	client *http.Client
	now    func() time.Time // replaced in tests

	mu        sync.Mutex
	keys      map[string]*verifyKey // by kid; "" for a key without one
	expires   time.Time
	lastFetch time.Time     // last attempt, successful or not
	fetching  chan struct{} // closed when the fetch in flight ends; nil when none
}

func newKeySet(url string, client *http.Client) *keySet {
	return &keySet{url: url, client: client, now: time.Now}
}

// get returns the key for kid, fetching the set when nothing is cached, the
// cache is stale, or kid is unknown (a key rotation), at most once per
// jwksMinInterval. A failed fetch keeps the old keys: an auth service
// hiccup must not lock out everyone holding a token signed by a known key.
// Requests whose key is cached and fresh never wait for a fetch; the others
// wait for the one fetch in flight rather than each starting their own.
func (s *keySet) get(ctx context.Context, kid string) (*verifyKey, error) {
	s.mu.Lock()
	now := s.now()
	k := s.lookup(kid)
	stale := s.keys == nil || !now.Before(s.expires)
	due := stale || k == nil
	if due && s.fetching == nil && (s.lastFetch.IsZero() || now.Sub(s.lastFetch) >= jwksMinInterval) {
		s.lastFetch = now
		s.fetching = make(chan struct{})
		// Detached from the request's cancellation: an impatient client must
		// not abort the fetch and so block refreshes for everyone.
		go s.refresh(context.WithoutCancel(ctx), s.fetching)
	}
	wait := s.fetching
	s.mu.Unlock()

	// A cached key that is fresh is used at once, even while a fetch for
	// another (unknown) kid is in flight.
	if wait != nil && (k == nil || stale) {
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, audit.Errorf(audit.EUNAUTHORIZED, "cannot verify token: key set unavailable")
		}
		s.mu.Lock()
		k = s.lookup(kid)
		s.mu.Unlock()
	}
	s.mu.Lock()
	haveKeys := s.keys != nil
	s.mu.Unlock()
	switch {
	case k != nil:
		return k, nil
	case !haveKeys:
		return nil, audit.Errorf(audit.EUNAUTHORIZED, "cannot verify token: key set unavailable")
	case kid == "":
		return nil, audit.Errorf(audit.EUNAUTHORIZED, "token has no kid and the key set has several keys")
	default:
		return nil, audit.Errorf(audit.EUNAUTHORIZED, "cannot verify token: unknown key id")
	}
}

// refresh fetches the set, stores it, and closes done.
func (s *keySet) refresh(ctx context.Context, done chan struct{}) {
	keys, ttl, err := s.fetch(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		slog.Warn("auth: cannot fetch JWKS", "url", s.url, "err", err)
	} else {
		s.keys, s.expires = keys, s.now().Add(ttl)
	}
	s.fetching = nil
	close(done)
}

// lookup finds kid in the cache. A token without kid is accepted only when
// the set has exactly one key, so there is no doubt which one signed it.
func (s *keySet) lookup(kid string) *verifyKey {
	if kid == "" && len(s.keys) == 1 {
		for _, k := range s.keys {
			return k
		}
	}
	return s.keys[kid]
}

// fetch downloads and parses the key set and returns how long to cache it.
func (s *keySet) fetch(ctx context.Context) (map[string]*verifyKey, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("status %s", resp.Status)
	}
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, jwksMaxBody)).Decode(&set); err != nil {
		return nil, 0, fmt.Errorf("decode: %w", err)
	}
	keys := make(map[string]*verifyKey, len(set.Keys))
	for _, j := range set.Keys {
		k, err := j.verifyKey()
		if err != nil {
			// Skip keys we cannot use (encryption keys, other curves): one
			// odd entry must not disable the whole set.
			slog.Debug("auth: skipping JWKS key", "kid", j.Kid, "err", err)
			continue
		}
		keys[j.Kid] = k
	}
	if len(keys) == 0 {
		return nil, 0, errors.New("no usable signing keys")
	}
	return keys, maxAge(resp.Header), nil
}

// maxAge reads Cache-Control max-age, defaulting to jwksDefaultTTL.
func maxAge(h http.Header) time.Duration {
	for _, d := range strings.Split(h.Get("Cache-Control"), ",") {
		name, val, _ := strings.Cut(strings.TrimSpace(d), "=")
		if !strings.EqualFold(name, "max-age") {
			continue
		}
		n, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64)
		if err != nil || n < 0 {
			break
		}
		if n > int64(jwksMaxTTL/time.Second) {
			return jwksMaxTTL
		}
		return time.Duration(n) * time.Second
	}
	return jwksDefaultTTL
}

// jwk is one JSON Web Key (RFC 7517/7518/8037), the fields we use.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// verifyKey converts j to a public key and the algorithms it may verify.
func (j jwk) verifyKey() (*verifyKey, error) {
	if j.Use != "" && j.Use != "sig" {
		return nil, fmt.Errorf("use %q", j.Use)
	}
	var k *verifyKey
	switch j.Kty {
	case "RSA":
		n, err1 := b64(j.N)
		e, err2 := b64(j.E)
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		if len(n) == 0 || len(e) == 0 || len(e) > 4 {
			return nil, errors.New("bad RSA n or e")
		}
		exp := new(big.Int).SetBytes(e).Int64()
		if exp < 3 {
			return nil, errors.New("bad RSA exponent")
		}
		k = &verifyKey{key: &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(exp)}, algs: rsaAlgs}
	case "EC":
		curves := map[string]elliptic.Curve{"P-256": elliptic.P256(), "P-384": elliptic.P384(), "P-521": elliptic.P521()}
		curve, ok := curves[j.Crv]
		if !ok {
			return nil, fmt.Errorf("curve %q", j.Crv)
		}
		x, err1 := b64(j.X)
		y, err2 := b64(j.Y)
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		// RFC 7518 6.2.1.2: coordinates are full length, so the uncompressed
		// point is simply 0x04 || x || y; the parser checks it is on the curve.
		size := (curve.Params().BitSize + 7) / 8
		if len(x) != size || len(y) != size {
			return nil, errors.New("bad EC coordinate length")
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(curve, slices.Concat([]byte{4}, x, y))
		if err != nil {
			return nil, err
		}
		k = &verifyKey{key: pub, algs: []string{ecCurveAlg[j.Crv]}}
	case "OKP":
		if j.Crv != "Ed25519" {
			return nil, fmt.Errorf("curve %q", j.Crv)
		}
		x, err := b64(j.X)
		if err != nil {
			return nil, err
		}
		if len(x) != ed25519.PublicKeySize {
			return nil, errors.New("bad Ed25519 key length")
		}
		k = &verifyKey{key: ed25519.PublicKey(x), algs: []string{"EdDSA"}}
	default:
		return nil, fmt.Errorf("kty %q", j.Kty)
	}
	// A key that names its algorithm verifies only that one.
	if j.Alg != "" {
		if !slices.Contains(k.algs, j.Alg) {
			return nil, fmt.Errorf("alg %q does not fit kty %q", j.Alg, j.Kty)
		}
		k.algs = []string{j.Alg}
	}
	return k, nil
}

// b64 decodes base64url, with or without padding.
func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}
