package client_test

// These examples need a running nself-audit, so they are compiled but not
// run; cmd/nself-audit's tests run the same calls against the service.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/nself-org/nself-audit/client"
)

func Example() {
	ctx := context.Background()
	c, err := client.New("http://127.0.0.1:3843", os.Getenv("PLUGIN_INTERNAL_SECRET"),
		client.WithAccount("acme"), client.WithSourcePlugin("nself-billing"))
	if err != nil {
		log.Fatal(err)
	}
	// A key derived from the event's own identity makes retries safe even
	// across restarts of the caller.
	ev, err := c.PostEvent(ctx, client.NewEvent{
		ActorID: "user-42", Action: "invoice.paid",
		ResourceType: "invoice", ResourceID: "inv-1001",
		Metadata:       json.RawMessage(`{"amount_cents":4999,"currency":"EUR"}`),
		IdempotencyKey: "invoice-1001-paid",
	})
	var apiErr *client.Error
	switch {
	case errors.As(err, &apiErr) && apiErr.Code == client.CodeInvalidRequest:
		log.Fatalf("refused: %s", apiErr.Message)
	case err != nil:
		log.Fatal(err) // unreachable after the retries, or a 4xx/5xx
	}
	fmt.Println(ev.Seq, ev.Hash)
}

func ExampleClient_AllEvents() {
	ctx := context.Background()
	c, _ := client.New("http://127.0.0.1:3843", os.Getenv("PLUGIN_INTERNAL_SECRET"))
	o := client.ListOptions{Filter: client.Filter{Action: "user.*", Since: time.Now().Add(-24 * time.Hour)}, Limit: 1000}
	for e, err := range c.AllEvents(ctx, o) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(e.OccurredAt.Format(time.RFC3339), e.ActorID, e.Action)
	}
}

func ExampleClient_Tail() {
	ctx, stop := context.WithTimeout(context.Background(), time.Hour)
	defer stop()
	c, _ := client.New("http://127.0.0.1:3843", os.Getenv("PLUGIN_INTERNAL_SECRET"))
	err := c.Tail(ctx, client.TailOptions{Filter: client.Filter{Severity: "critical"}}, func(e *client.Event) error {
		fmt.Println(e.Seq, e.Action, e.ActorID)
		return nil
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		log.Fatal(err)
	}
}

func ExampleClient_Export() {
	ctx := context.Background()
	c, _ := client.New("http://127.0.0.1:3843", os.Getenv("PLUGIN_INTERNAL_SECRET"))
	f, err := os.Create("acme.ndjson")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	if _, err := c.Export(ctx, f, client.ExportOptions{Format: "ndjson"}); err != nil {
		log.Fatal(err)
	}
}
