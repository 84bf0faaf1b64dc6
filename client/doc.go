// Package client is a Go client of the nself-audit HTTP API (docs/API.md):
// typed, context-aware, and safe to retry.
//
// Create one Client per service and account and share it; it is safe for
// concurrent use:
//
//	c, err := client.New("http://127.0.0.1:3843", os.Getenv("PLUGIN_INTERNAL_SECRET"),
//		client.WithAccount("acme"), client.WithSourcePlugin("nself-billing"))
//	if err != nil { ... }
//	ev, err := c.PostEvent(ctx, client.NewEvent{
//		ActorID: "user-42", Action: "invoice.paid",
//		ResourceType: "invoice", ResourceID: "inv-1001",
//		Metadata: json.RawMessage(`{"amount_cents":4999}`),
//	})
//	var apiErr *client.Error
//	if errors.As(err, &apiErr) && apiErr.Code == client.CodeInvalidRequest { ... }
//
// # Methods and routes
//
// Every route of the API has a method: PostEvent and PostBatch (POST
// /api/v1/events and /api/v1/events/batch), ListEvents and AllEvents (GET
// /api/v1/events, one page or every page), GetEvent, ActorEvents and
// AllActorEvents, Stats, Verify, Export (the chain as NDJSON or CSV, streamed
// to an io.Writer), Tail (GET /api/v1/events/stream, Server-Sent Events),
// CreateCheckpoint, Checkpoints, LatestCheckpoint and PublicKey; Principal
// (GET /auth/verify), and the probes Health and Ready.
//
// # Errors
//
// An answer other than 2xx is returned as a *Error holding the HTTP status,
// the error code of the body ("invalid_request", "not_found", ...), its
// message and the request id; match on Code, with errors.As. Transport
// failures are returned as they come from net/http, after the retries.
//
// # Retries and idempotency
//
// A request that gets 503 (the service says the database is unavailable) or
// that fails to connect, or whose connection breaks before an answer arrives,
// is sent again, up to WithRetries times (default 4), after a backoff that
// doubles from 200 ms up to 5 s, or after the Retry-After the service asked
// for when that is longer (at most 30 s). A 4xx is never retried. Every
// method honours its context, also while it waits to retry.
//
// Every POST of events carries an Idempotency-Key: the caller's
// (NewEvent.IdempotencyKey, or the key argument of PostBatch), else one the
// client generates once per call and reuses for that call's retries. So a
// retry after a lost answer can never store an event twice: the service
// answers it with the event stored the first time. To make retries safe
// across process restarts too, pass a key derived from the event's own
// identity (an order id, a message id).
//
// # Types
//
// The types of this package are the client's own, not the server's internal
// ones: they are a stable public surface and carry no dependency of the
// server. They decode every member the service sends, and encode back to
// the same bytes (times in the service's form, UTC with six fractional
// digits; metadata as the exact JSON the service sent), which the module's
// tests check against the running service on both stores. An Event read from
// the API can therefore be rehashed as it is (docs/CHAIN.md).
package client
