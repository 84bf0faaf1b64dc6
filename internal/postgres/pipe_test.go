package postgres

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
)

// TestAppendArray: the hand-written binary arrays are byte for byte what
// pgx writes for the same values, and what appendArray does not handle is
// left to pgx.
func TestAppendArray(t *testing.T) {
	m := pgtype.NewMap()
	berlin := time.FixedZone("CEST", 2*3600)
	cases := []struct {
		oid uint32
		arg any
	}{
		{pgtype.TextArrayOID, []string{"user.login", "", "日本 \x01 \"q\"", "x"}},
		{pgtype.JSONArrayOID, []string{`{"a":1}`, `{}`, `{"é":[true,null]}`}},
		{pgtype.UUIDArrayOID, []uuid.UUID{uuid.MustParse("01900000-0000-7000-8000-000000000001"), uuid.Max, uuid.Nil}},
		{pgtype.Int8ArrayOID, []int64{1, 0, -1, 1 << 62, -(1 << 63)}},
		{pgtype.TimestamptzArrayOID, []time.Time{
			time.Date(2026, 11, 27, 17, 4, 5, 123456000, time.UTC),
			time.Date(2026, 11, 27, 19, 4, 5, 999999000, berlin),
			time.Date(1999, 12, 31, 23, 59, 59, 1000, time.UTC), // before PostgreSQL's epoch
			time.Date(1950, 1, 1, 0, 0, 0, 0, time.UTC),         // before Unix's
			time.Unix(0, 0),
		}},
	}
	for _, c := range cases {
		got, ok := appendArray([]byte("prefix"), c.oid, c.arg)
		if !ok {
			t.Errorf("%T for oid %d: not handled", c.arg, c.oid)
			continue
		}
		want, err := m.Encode(c.oid, pgtype.BinaryFormatCode, c.arg, []byte("prefix"))
		if err != nil {
			t.Fatalf("pgx: %T: %v", c.arg, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%T for oid %d:\n got %x\nwant %x", c.arg, c.oid, got, want)
		}
	}
	for _, c := range []struct {
		oid uint32
		arg any
	}{
		{pgtype.TextArrayOID, []string{}}, {pgtype.TextArrayOID, []string(nil)}, {pgtype.UUIDArrayOID, []string{"x"}},
		{pgtype.Int4ArrayOID, []int64{1}}, {pgtype.TimestampArrayOID, []time.Time{time.Unix(0, 0)}},
		{pgtype.TextOID, "x"}, {pgtype.TextArrayOID, []any{"x"}},
	} {
		if got, ok := appendArray([]byte("prefix"), c.oid, c.arg); ok || string(got) != "prefix" {
			t.Errorf("%T for oid %d: handled (%x)", c.arg, c.oid, got)
		}
	}
}
