package postgres

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/nself-org/nself-audit/internal/audit"
)

// scanEvents reads rows of eventColumns. When the columns arrive in the
// binary forms the pool asks for (it does for prepared statements), each
// row is decoded from its raw bytes: its text columns are copied into one
// string, which the event's fields share, and its metadata into one slice.
// Scanning column by column cost a string, and for the uuid a text parse,
// per value: a quarter of the service's CPU on list pages, at 1M events.
// Any other form of the columns (a simple-protocol query) takes rows.Scan.
func scanEvents(rows pgx.Rows) ([]*audit.Event, error) {
	defer rows.Close()
	if !rawEventColumns(rows.FieldDescriptions()) {
		return scanEventsEach(rows)
	}
	var out []*audit.Event
	var scratch []byte
	for rows.Next() {
		e := new(audit.Event)
		var err error
		if scratch, err = decodeEvent(e, rows.RawValues(), scratch[:0]); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// The positions and types of eventColumns.
const (
	colID = iota
	colAccount
	colSeq
	colOccurred
	colRecorded
	colActorID
	colActorType
	colAction
	colResourceType
	colResourceID
	colOutcome
	colSeverity
	colIP
	colUserAgent
	colRequestID
	colSource
	colMetadata
	colPrevHash
	colHash
	eventColumnCount
)

// textColumns are the event's string fields in column order.
var textColumns = []int{colAccount, colActorID, colActorType, colAction, colResourceType, colResourceID,
	colOutcome, colSeverity, colIP, colUserAgent, colRequestID, colSource, colPrevHash, colHash}

// rawEventColumns reports whether fds are eventColumns in forms decodeEvent
// reads: uuid, int8 and the timestamps in binary, text in either form (the
// bytes are the same).
func rawEventColumns(fds []pgconn.FieldDescription) bool {
	if len(fds) != eventColumnCount {
		return false
	}
	for i, fd := range fds {
		var oid uint32 = pgtype.TextOID
		switch i {
		case colID:
			oid = pgtype.UUIDOID
		case colSeq:
			oid = pgtype.Int8OID
		case colOccurred, colRecorded:
			oid = pgtype.TimestamptzOID
		}
		if fd.DataTypeOID != oid || (oid != pgtype.TextOID && fd.Format != pgtype.BinaryFormatCode) {
			return false
		}
	}
	return true
}

// pgEpochMicros is 2000-01-01 UTC, PostgreSQL's zero time, in Unix
// microseconds.
const pgEpochMicros = 946684800 * 1000000

// decodeEvent fills e from one row's raw values, using scratch to gather
// the text columns; it returns scratch for the next row.
func decodeEvent(e *audit.Event, vals [][]byte, scratch []byte) ([]byte, error) {
	if len(vals) != eventColumnCount {
		return scratch, fmt.Errorf("event row: %d columns, want %d", len(vals), eventColumnCount)
	}
	for i, v := range vals {
		if v == nil {
			return scratch, fmt.Errorf("event row: column %d is null", i)
		}
	}
	if len(vals[colID]) != 16 || len(vals[colSeq]) != 8 || len(vals[colOccurred]) != 8 || len(vals[colRecorded]) != 8 {
		return scratch, fmt.Errorf("event row: a binary column has the wrong size")
	}
	copy(e.ID[:], vals[colID])
	e.Seq = int64(binary.BigEndian.Uint64(vals[colSeq]))
	var err error
	if e.OccurredAt, err = pgTime(vals[colOccurred]); err != nil {
		return scratch, err
	}
	if e.RecordedAt, err = pgTime(vals[colRecorded]); err != nil {
		return scratch, err
	}
	for _, c := range textColumns {
		scratch = append(scratch, vals[c]...)
	}
	all := string(scratch)
	fields := [...]*string{&e.SourceAccountID, &e.ActorID, &e.ActorType, &e.Action, &e.ResourceType,
		&e.ResourceID, &e.Outcome, &e.Severity, &e.IPAddress, &e.UserAgent, &e.RequestID, &e.Source,
		&e.PrevHash, &e.Hash}
	at := 0
	for i, c := range textColumns {
		n := len(vals[c])
		*fields[i] = all[at : at+n]
		at += n
	}
	// A json column keeps the canonical text exactly as it was hashed.
	e.Metadata = make(audit.CanonicalJSON, len(vals[colMetadata]))
	copy(e.Metadata, vals[colMetadata])
	return scratch, nil
}

// pgTime decodes a binary timestamptz: microseconds since 2000-01-01 UTC.
func pgTime(b []byte) (time.Time, error) {
	us := int64(binary.BigEndian.Uint64(b))
	if us == 1<<63-1 || us == -1<<63 { // infinity, -infinity
		return time.Time{}, fmt.Errorf("event row: an infinite timestamp")
	}
	return time.UnixMicro(us + pgEpochMicros).UTC(), nil
}

// scanEventsEach reads rows of eventColumns column by column.
func scanEventsEach(rows pgx.Rows) ([]*audit.Event, error) {
	var out []*audit.Event
	for rows.Next() {
		var e audit.Event
		var meta string
		if err := rows.Scan(&e.ID, &e.SourceAccountID, &e.Seq, &e.OccurredAt, &e.RecordedAt, &e.ActorID,
			&e.ActorType, &e.Action, &e.ResourceType, &e.ResourceID, &e.Outcome, &e.Severity, &e.IPAddress,
			&e.UserAgent, &e.RequestID, &e.Source, &meta, &e.PrevHash, &e.Hash); err != nil {
			return nil, err
		}
		e.OccurredAt, e.RecordedAt = e.OccurredAt.UTC(), e.RecordedAt.UTC()
		// A json column keeps the canonical text exactly as it was hashed.
		e.Metadata = audit.CanonicalJSON(meta)
		out = append(out, &e)
	}
	return out, rows.Err()
}
