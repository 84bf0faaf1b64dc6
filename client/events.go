package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
)

// PostEvent records one event (POST /api/v1/events) and returns it as
// stored. The request carries e.IdempotencyKey, or a generated key, so that
// its retries store it at most once. When the key had already stored this
// event, the answer is that first event.
func (c *Client) PostEvent(ctx context.Context, e NewEvent) (*Event, error) {
	body, err := marshal(e)
	if err != nil {
		return nil, err
	}
	key := e.IdempotencyKey
	if key == "" {
		key = NewIdempotencyKey()
	}
	var out Event
	if _, err := c.call(ctx, &request{method: "POST", path: "/api/v1/events", body: body,
		header: http.Header{"Idempotency-Key": {key}}}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PostBatch records 1 to 1000 events of the account in one transaction, all
// or nothing (POST /api/v1/events/batch). key covers the whole batch; ""
// generates one. Sending the same batch again with the same key stores
// nothing and answers the events stored the first time (Batch.Replayed).
func (c *Client) PostBatch(ctx context.Context, events []NewEvent, key string) (*Batch, error) {
	for i := range events {
		if events[i].IdempotencyKey != "" {
			return nil, fmt.Errorf("client: events[%d]: IdempotencyKey: a batch takes one key for all its events, PostBatch's argument", i)
		}
	}
	if events == nil {
		events = []NewEvent{}
	}
	body, err := marshal(struct {
		Events []NewEvent `json:"events"`
	}{events})
	if err != nil {
		return nil, err
	}
	if key == "" {
		key = NewIdempotencyKey()
	}
	var out Batch
	res, err := c.call(ctx, &request{method: "POST", path: "/api/v1/events/batch", body: body,
		header: http.Header{"Idempotency-Key": {key}}}, &out)
	if err != nil {
		return nil, err
	}
	out.Replayed = res.Header.Get("Idempotent-Replayed") == "true"
	return &out, nil
}

// ListEvents returns one page of the account's events (GET /api/v1/events).
func (c *Client) ListEvents(ctx context.Context, o ListOptions) (*EventPage, error) {
	var out EventPage
	if _, err := c.call(ctx, &request{method: "GET", path: "/api/v1/events", query: o.values()}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AllEvents yields every event that matches o, following the cursors page
// after page from o.Cursor (or the first page). It stops at the first error,
// which it yields with a nil event.
//
//	for e, err := range c.AllEvents(ctx, client.ListOptions{Sort: "asc"}) {
//		if err != nil { return err }
//		...
//	}
func (c *Client) AllEvents(ctx context.Context, o ListOptions) iter.Seq2[*Event, error] {
	return c.pages(ctx, o, c.ListEvents)
}

// ActorEvents returns one page of one actor's events
// (GET /api/v1/actors/{actor_id}/events); o.ActorID must be empty.
func (c *Client) ActorEvents(ctx context.Context, actorID string, o ListOptions) (*EventPage, error) {
	if actorID == "" {
		return nil, errors.New("client: ActorEvents: actorID: required")
	}
	var out EventPage
	path := "/api/v1/actors/" + url.PathEscape(actorID) + "/events"
	if _, err := c.call(ctx, &request{method: "GET", path: path, query: o.values()}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AllActorEvents is AllEvents for ActorEvents.
func (c *Client) AllActorEvents(ctx context.Context, actorID string, o ListOptions) iter.Seq2[*Event, error] {
	return c.pages(ctx, o, func(ctx context.Context, o ListOptions) (*EventPage, error) {
		return c.ActorEvents(ctx, actorID, o)
	})
}

func (c *Client) pages(ctx context.Context, o ListOptions, page func(context.Context, ListOptions) (*EventPage, error)) iter.Seq2[*Event, error] {
	return func(yield func(*Event, error) bool) {
		for {
			p, err := page(ctx, o)
			if err != nil {
				yield(nil, err)
				return
			}
			for i := range p.Events {
				if !yield(&p.Events[i], nil) {
					return
				}
			}
			if p.NextCursor == nil {
				return
			}
			o.Cursor = *p.NextCursor
		}
	}
}

// GetEvent returns one event by id (GET /api/v1/events/{id}). An id that is
// not the account's, or not visible to the caller, is a 404 *Error with
// Code "not_found".
func (c *Client) GetEvent(ctx context.Context, id string) (*Event, error) {
	var out Event
	if _, err := c.call(ctx, &request{method: "GET", path: "/api/v1/events/" + url.PathEscape(id)}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Stats summarises the events that match o (GET /api/v1/stats).
func (c *Client) Stats(ctx context.Context, o StatsOptions) (*Stats, error) {
	q := o.Filter.values()
	if o.Interval != "" {
		q.Set("interval", o.Interval)
	}
	var out Stats
	if _, err := c.call(ctx, &request{method: "GET", path: "/api/v1/stats", query: q}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Verify recomputes the account's chain on the server, within r
// (GET /api/v1/verify). A broken chain is not an error: see
// VerifyResult.OK.
func (c *Client) Verify(ctx context.Context, r SeqRange) (*VerifyResult, error) {
	var out VerifyResult
	if _, err := c.call(ctx, &request{method: "GET", path: "/api/v1/verify", query: r.values(nil)}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ExportOptions is the query of GET /api/v1/events/export.
type ExportOptions struct {
	Format string // "ndjson" (default) or "csv"
	SeqRange
	Filter
}

// Export streams the account's chain in seq order to w, as the service
// writes it (GET /api/v1/events/export): NDJSON, one event per line as
// GetEvent returns it, or CSV with a header row. It returns the bytes
// written. The request is retried only until the answer starts; a stream
// broken later returns its error, and the caller may resume with FromSeq
// after the last complete line (the CLI's export verb does).
func (c *Client) Export(ctx context.Context, w io.Writer, o ExportOptions) (int64, error) {
	q := o.SeqRange.values(o.Filter.values())
	if o.Format != "" {
		q.Set("format", o.Format)
	}
	res, err := c.send(ctx, &request{method: "GET", path: "/api/v1/events/export", query: q})
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	n, err := io.Copy(w, res.Body)
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return n, err
}

// CreateCheckpoint signs the account's chain head now
// (POST /api/v1/checkpoints). It answers the latest checkpoint, unchanged,
// when no event came since (created false). An account without events is a
// 409 *Error.
func (c *Client) CreateCheckpoint(ctx context.Context) (cp *Checkpoint, created bool, err error) {
	var out Checkpoint
	// The route reads no key; one is sent anyway, as with every POST.
	res, err := c.call(ctx, &request{method: "POST", path: "/api/v1/checkpoints",
		header: http.Header{"Idempotency-Key": {NewIdempotencyKey()}}}, &out)
	if err != nil {
		return nil, false, err
	}
	return &out, res.StatusCode == http.StatusCreated, nil
}

// Checkpoints lists the account's checkpoints in seq order
// (GET /api/v1/checkpoints). Page with FromSeq: the last Seq plus 1.
func (c *Client) Checkpoints(ctx context.Context, o CheckpointOptions) ([]Checkpoint, error) {
	q := o.SeqRange.values(nil)
	if o.Limit != 0 {
		q.Set("limit", fmt.Sprint(o.Limit))
	}
	var out CheckpointList
	if _, err := c.call(ctx, &request{method: "GET", path: "/api/v1/checkpoints", query: q}, &out); err != nil {
		return nil, err
	}
	return out.Checkpoints, nil
}

// LatestCheckpoint returns the account's newest checkpoint
// (GET /api/v1/checkpoints/latest); none yet is a 404 *Error.
func (c *Client) LatestCheckpoint(ctx context.Context) (*Checkpoint, error) {
	var out Checkpoint
	if _, err := c.call(ctx, &request{method: "GET", path: "/api/v1/checkpoints/latest"}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PublicKey returns the key that verifies the service's new checkpoints
// (GET /api/v1/public-key). Pin it, or take it from the operator: a key
// fetched from the service it checks proves little.
func (c *Client) PublicKey(ctx context.Context) (*PublicKey, error) {
	var out PublicKey
	if _, err := c.call(ctx, &request{method: "GET", path: "/api/v1/public-key"}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Health is the answer of GET /health and GET /ready.
type Health struct {
	Status     string     `json:"status"` // ok or degraded (/health); ready or not_ready (/ready)
	Version    string     `json:"version"`
	Migrations Migrations `json:"migrations"`
	Reason     string     `json:"reason,omitempty"` // why, when the status is not good
}

// Migrations counts the schema's migrations.
type Migrations struct {
	Applied  int `json:"applied"`
	Expected int `json:"expected"`
}

// Health asks GET /health whether the service's database answers. The
// answer is returned for 200 and for 503 (Status "degraded"); the probe is
// not retried.
func (c *Client) Health(ctx context.Context) (*Health, error) { return c.probe(ctx, "/health") }

// Ready asks GET /ready whether the service can serve: the database
// answers and every migration is applied. The answer is returned for 200
// and for 503 (Status "not_ready" and a Reason); the probe is not retried.
func (c *Client) Ready(ctx context.Context) (*Health, error) { return c.probe(ctx, "/ready") }

func (c *Client) probe(ctx context.Context, path string) (*Health, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base.String()+path, nil)
	if err != nil {
		return nil, err
	}
	if c.agent != "" {
		req.Header.Set("User-Agent", c.agent)
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusServiceUnavailable {
		return nil, readError(res)
	}
	defer res.Body.Close()
	var out Health
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		if res.StatusCode != http.StatusOK {
			return nil, &Error{StatusCode: res.StatusCode, Message: http.StatusText(res.StatusCode), RequestID: res.Header.Get("X-Request-Id")}
		}
		return nil, fmt.Errorf("nself-audit: GET %s: reading the answer: %w", path, err)
	}
	return &out, nil
}

// Principal is who the service takes the client's credentials for
// (GET /auth/verify).
type Principal struct {
	Kind      string `json:"kind"` // plugin or jwt
	Role      string `json:"role"` // plugin, or the JWT's role in force
	AccountID string `json:"account_id"`
	UserID    string `json:"user_id"` // the JWT's x-hasura-user-id; "" for the plugin token
}

// Principal checks the client's credentials and account (GET /auth/verify,
// the target of Nginx's auth_request) without doing anything else: a 401
// or 403 *Error when they are not accepted.
func (c *Client) Principal(ctx context.Context) (*Principal, error) {
	var out Principal
	if _, err := c.call(ctx, &request{method: "GET", path: "/auth/verify"}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
