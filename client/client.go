package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Client calls one nself-audit service for one account. It is safe for
// concurrent use.
type Client struct {
	base    *url.URL
	token   string
	account string
	source  string
	agent   string
	hc      *http.Client

	retries    int
	minBackoff time.Duration
	maxBackoff time.Duration
	maxWait    time.Duration // cap on a Retry-After the service asks for
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the client send its requests with hc (for its
// transport, proxies, TLS settings). Without it, a client of its own is used.
// The client's Timeout, if set, bounds each attempt, streams included: leave
// it 0 for Export and Tail and bound those with their context.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithAccount makes every request act for account (the X-Source-Account-Id
// header). Without it, the service uses the token's account: "primary" for
// the plugin token, the JWT's own account for a Hasura JWT.
func WithAccount(account string) Option { return func(c *Client) { c.account = account } }

// WithSourcePlugin sends X-Source-Plugin: the source of every posted event
// that names none.
func WithSourcePlugin(name string) Option { return func(c *Client) { c.source = name } }

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.agent = ua } }

// WithRetries sets how many times a request is sent again after a 503 or a
// connection error (default 4; 0 disables retries).
func WithRetries(n int) Option { return func(c *Client) { c.retries = max(n, 0) } }

// WithBackoff sets the first wait before a retry and the longest (defaults
// 200 ms and 5 s); the wait doubles from one retry to the next.
func WithBackoff(first, longest time.Duration) Option {
	return func(c *Client) { c.minBackoff, c.maxBackoff = first, max(longest, first) }
}

// New returns a client of the service at baseURL (such as
// http://127.0.0.1:3843) that authenticates with token: the plugin token
// (PLUGIN_INTERNAL_SECRET) or a Hasura JWT.
func New(baseURL, token string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("client: base URL %q: want http:// or https:// and a host, such as http://127.0.0.1:3843", baseURL)
	}
	if token == "" {
		return nil, errors.New("client: token: required (the plugin token or a Hasura JWT)")
	}
	c := &Client{base: u, token: token, agent: "nself-audit-client/1",
		retries: 4, minBackoff: 200 * time.Millisecond, maxBackoff: 5 * time.Second, maxWait: 30 * time.Second}
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil {
		c.hc = &http.Client{}
	}
	return c, nil
}

// Account returns the account the client names ("" when it names none).
func (c *Client) Account() string { return c.account }

// Error codes of the API's error bodies (docs/API.md#errors).
const (
	CodeInvalidRequest   = "invalid_request"
	CodeUnauthorized     = "unauthorized"
	CodeForbidden        = "forbidden"
	CodeNotFound         = "not_found"
	CodeMethodNotAllowed = "method_not_allowed"
	CodeConflict         = "conflict"
	CodePayloadTooLarge  = "payload_too_large"
	CodeUnavailable      = "unavailable"
	CodeInternal         = "internal_error"
)

// Error is an answer of the service other than 2xx.
type Error struct {
	StatusCode int    // the HTTP status
	Code       string // the body's error.code, such as "invalid_request"; "" when the body is not the API's error JSON
	Message    string // the body's error.message, or the start of a body that is not the API's JSON
	RequestID  string // the body's error.request_id, else the X-Request-Id header
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "nself-audit: %d", e.StatusCode)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.RequestID != "" {
		b.WriteString(" (request " + e.RequestID + ")")
	}
	return b.String()
}

// readError turns a non-2xx answer into an *Error; it reads and closes the
// body.
func readError(res *http.Response) *Error {
	defer res.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	e := &Error{StatusCode: res.StatusCode, RequestID: res.Header.Get("X-Request-Id")}
	if s, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil && s >= 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	var body struct {
		Error *struct {
			Code      string `json:"code"`
			Message   string `json:"message"`
			RequestID string `json:"request_id"`
		} `json:"error"`
	}
	if json.Unmarshal(raw, &body) == nil && body.Error != nil && body.Error.Code != "" {
		e.Code, e.Message = body.Error.Code, body.Error.Message
		if body.Error.RequestID != "" {
			e.RequestID = body.Error.RequestID
		}
		return e
	}
	msg := strings.TrimSpace(string(raw))
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	if msg == "" {
		msg = http.StatusText(res.StatusCode)
	}
	e.Message = msg
	return e
}

// request is one API call; body is resent as it is on every attempt.
type request struct {
	method string
	path   string // escaped, starting with /api/v1/
	query  url.Values
	body   []byte
	header http.Header
}

// NewIdempotencyKey returns a random key (32 hex digits) for a POST.
func NewIdempotencyKey() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported systems
	}
	return hex.EncodeToString(b[:])
}

// send sends r, retrying on 503 and connection errors, and returns the 2xx
// answer with its body unread; any other answer is a *Error.
func (c *Client) send(ctx context.Context, r *request) (*http.Response, error) {
	target := c.base.String() + r.path // r.path is escaped already
	if len(r.query) > 0 {
		target += "?" + r.query.Encode()
	}
	for attempt := 0; ; attempt++ {
		var body io.Reader
		if r.body != nil {
			body = bytes.NewReader(r.body)
		}
		req, err := http.NewRequestWithContext(ctx, r.method, target, body)
		if err != nil {
			return nil, err
		}
		for k, v := range r.header {
			req.Header[k] = v
		}
		req.Header.Set("Authorization", "Bearer "+c.token)
		if c.account != "" {
			req.Header.Set("X-Source-Account-Id", c.account)
		}
		if c.source != "" {
			req.Header.Set("X-Source-Plugin", c.source)
		}
		if c.agent != "" {
			req.Header.Set("User-Agent", c.agent)
		}
		if r.body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		res, err := c.hc.Do(req)
		var wait time.Duration
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if !retryableTransport(err) || attempt >= c.retries {
				return nil, err
			}
		case res.StatusCode >= 200 && res.StatusCode < 300:
			return res, nil
		default:
			apiErr := readError(res)
			if res.StatusCode != http.StatusServiceUnavailable || attempt >= c.retries {
				return nil, apiErr
			}
			wait = min(apiErr.RetryAfter, c.maxWait)
		}
		wait = max(wait, c.backoff(attempt))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// backoff is the wait before retry number attempt+1: doubling from
// minBackoff, capped at maxBackoff, with up to 20% jitter so that many
// clients do not retry in step.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.minBackoff
	for i := 0; i < attempt && d < c.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.maxBackoff)
	if d > 0 {
		d += time.Duration(mrand.Int64N(int64(d)/5 + 1))
	}
	return d
}

// retryableTransport reports whether err is a connection failure after
// which the request may be sent again: the POSTs carry an idempotency key,
// and the rest only read.
func retryableTransport(err error) bool {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	var op *net.OpError // dial, read and write failures
	if errors.As(err, &op) {
		return true
	}
	var ue *url.Error
	return errors.As(err, &ue) && ue.Timeout()
}

// call sends r and decodes the JSON answer into out (nil: discard). It
// returns the answer's status.
func (c *Client) call(ctx context.Context, r *request, out any) (*http.Response, error) {
	res, err := c.send(ctx, r)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if out == nil {
		io.Copy(io.Discard, res.Body)
		return res, nil
	}
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("nself-audit: %s %s: reading the answer: %w", r.method, r.path, err)
	}
	io.Copy(io.Discard, io.LimitReader(res.Body, 4<<10)) // the final newline: keeps the connection reusable
	return res, nil
}

// marshal encodes v without HTML escaping, as the service writes its
// answers.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
