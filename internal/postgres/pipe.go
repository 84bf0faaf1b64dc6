package postgres

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"
)

// pipeline is the fast path's connections: batches are written to them back
// to back, each one implicit transaction (its statements, then Sync),
// without waiting for the one before to commit. On one connection PostgreSQL
// runs them one after the other on one backend, so batch N+1, linked to the
// head batch N will leave, finds that head when it runs; if N failed, N+1's
// advance_chain_head finds the old head, raises NSA01 and rolls back, and
// both take the locking path.
//
// A large batch goes to the other connection (pipeConns), in two parts: the
// body (the inserts) at once, so that it runs beside batch N on the other
// backend, and the tail (the heads' moves, keys, rollups and Sync) once N
// has been answered. So N+1 moves a head only after N committed or rolled
// back, and finds N's head or raises NSA01 as above; its keys and rollups,
// after the head, follow N's too. A batch only ever waits for earlier ones.
// The chain does not rest on the wait (advance_chain_head checks the head
// either way); without it, N+1 raised NSA01 whenever its inserts finished
// before N moved the head, and took the locking path.
//
// With one batch in flight at a time, the backend sat idle while the service
// linked, encoded and sent the next one and waited for the answer: about
// half the time with 64 clients posting single events. pgx sends a batch
// and reads its results in one call, so this speaks the extended protocol
// itself on connections hijacked from pgconn after their statements are
// prepared: batches are written under mu (a delayed tail by a goroutine of
// its own), and one goroutine per connection reads the results in order.
type pipeline struct {
	config *pgconn.Config // the pool's, so the same server, TLS and settings
	types  *pgtype.Map

	// mu is held while a batch is linked, encoded and written, and by
	// Append's locking path for its whole transaction: a batch linked to a
	// head while a locking-path transaction moves it would fail, and its
	// fallback would then overlap the next batch in turn.
	mu    sync.Mutex
	conns [pipeConns]*pipeConn // nil: dial at the next send to it
	last  *pipeCall            // the batch sent last, on either connection
	at    int                  // the index in conns of last's connection
	// spec is each account's head after the last batch written, or the
	// last locking-path commit: where the next batch links. It goes when a
	// batch of the account fails; the account then takes the locking path,
	// which reads the head and sets it again.
	spec map[string]chainHead
}

// pipeConn is one hijacked connection and its reader.
type pipeConn struct {
	nc    net.Conn
	stmts map[string]*pgconn.StatementDescription // by SQL text
	calls chan *pipeCall                          // written, in order; the reader answers them
	buf   []byte

	once sync.Once
	dead chan struct{} // closed on the first read or write error
	err  error

	// tailDone is closed once the last batch sent to this connection is
	// written whole, its tail included (nil: none was sent). The next
	// batch's statements must not be written before, or they would join
	// its transaction.
	tailDone chan struct{}
}

// pipeCall is one batch written and not yet answered.
type pipeCall struct {
	conn  *pipeConn
	done  chan struct{}
	err   error // the batch's first error, or the connection's
	split bool  // its tail waited for the batch before, on the other connection
}

// pipeDepth bounds the batches written to one connection and not yet
// answered.
const pipeDepth = 64

// pipeConns is the number of pipeline connections. A batch of at least
// ParallelBatchEvents events goes to the connection the last batch did not,
// so that the inserts of the two run at once on two backends; a smaller one
// follows the last batch on its connection, where the backend runs them one
// after the other with no wait between (the single-event POSTs' batches,
// about 17 events each at 64 clients, lost about a seventh of their rate
// when every other one waited for the one before). One backend inserting
// 1000-event batches ran at 94 % of a core, its time mostly in index
// inserts, while the service waited on it.
const pipeConns = 2

// ParallelBatchEvents is the least number of events a batch needs to run on
// the pipeline's other connection, beside the batch before; smaller batches
// run one after another on one connection.
const ParallelBatchEvents = 256

// pipeTailWait bounds how long a batch's tail waits for the batch before.
// Past it the tail goes anyway, and advance_chain_head decides: it waits on
// the head row if the batch before holds it, else raises NSA01 and the batch
// takes the locking path. Without the bound, a lock request queued between
// the two could wait for the batch forever, unseen by PostgreSQL's deadlock
// check: the hourly CREATE TABLE … PARTITION OF (ACCESS EXCLUSIVE on the
// table) waits for this batch's inserts, the batch before waits behind it,
// and this batch waits, in the service, for that one
// (TestPipelineTailWaitBounded).
const pipeTailWait = time.Second

// pipeApplicationName names the pipeline's connection in pg_stat_activity.
const pipeApplicationName = "nself-audit-writer"

func newPipeline(config *pgconn.Config) *pipeline {
	config.RuntimeParams["application_name"] = pipeApplicationName
	return &pipeline{config: config, types: pgtype.NewMap(), spec: map[string]chainHead{}}
}

// pipeStatement is one statement of a batch.
type pipeStatement struct {
	sql  string
	args []any
}

// pipeStatements are every statement a batch may hold, prepared on each
// new connection.
var pipeStatements = []string{writeScopeSQL, setAccountSQL, insertEventsSQL, insertKeysSQL, advanceHeadSQL,
	rollupDimsSQL, rollupHoursSQL, rollupActorsSQL}

// dial connects, prepares the statements and hijacks the connection.
func (p *pipeline) dial(ctx context.Context) (*pipeConn, error) {
	pc, err := pgconn.ConnectConfig(ctx, p.config)
	if err != nil {
		return nil, err
	}
	c := &pipeConn{stmts: map[string]*pgconn.StatementDescription{}, calls: make(chan *pipeCall, pipeDepth),
		dead: make(chan struct{})}
	for i, sql := range pipeStatements {
		sd, err := pc.Prepare(ctx, fmt.Sprintf("nself_audit_pipe_%d", i), sql, nil)
		if err != nil {
			pc.Close(ctx)
			return nil, err
		}
		c.stmts[sql] = sd
	}
	if err := pc.SyncConn(ctx); err != nil {
		pc.Close(ctx)
		return nil, err
	}
	hc, err := pc.Hijack()
	if err != nil {
		pc.Close(ctx)
		return nil, err
	}
	c.nc = hc.Conn
	go c.read(hc.Frontend)
	return c, nil
}

// fail closes the connection with err, once: the reader then answers every
// call still queued with it.
func (c *pipeConn) fail(err error) {
	c.once.Do(func() {
		c.err = err
		close(c.dead)
		c.nc.Close()
	})
}

// read answers the calls in the order they were written: each call's
// messages end with ReadyForQuery, after its Sync.
func (c *pipeConn) read(fe *pgproto3.Frontend) {
	for call := range c.calls {
		select {
		case <-c.dead:
			call.err = c.err
			close(call.done)
			continue
		default:
		}
		var first error
		for {
			msg, err := fe.Receive()
			if err != nil {
				c.fail(fmt.Errorf("write pipeline: %w", err))
				call.err = c.err
				break
			}
			if e, ok := msg.(*pgproto3.ErrorResponse); ok && first == nil {
				first = pgconn.ErrorResponseToPgError(e)
			}
			if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
				call.err = first
				break
			}
		}
		close(call.done)
	}
}

// send links a batch to the pipeline's heads of its accounts (link returns
// its statements, body and tail, and the heads it leaves) and writes it as
// one transaction, under the pipeline's lock. The body (the inserts) is
// written at once; the tail (the heads' moves, keys and rollups) and Sync
// only once the batch sent before it, on the other connection, has been
// answered: the inserts of the two run at once, and the head moves in
// order. It returns the call to wait on. tried is false, with nothing
// written, when an account's head is unknown.
func (p *pipeline) send(ctx context.Context, accounts []string, events int,
	link func(from map[string]chainHead) (body, tail []pipeStatement, to map[string]chainHead, err error)) (call *pipeCall, tried bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	from := make(map[string]chainHead, len(accounts))
	for _, a := range accounts {
		h, ok := p.spec[a]
		if !ok {
			return nil, false, nil
		}
		from[a] = h
	}
	body, tail, to, err := link(from)
	if err != nil || body == nil { // nil: every item was answered within the batch
		return nil, true, err
	}
	i := p.at
	if events >= ParallelBatchEvents && p.last != nil {
		i = (i + 1) % pipeConns
	}
	c, err := p.connAt(ctx, i)
	if err != nil {
		return nil, true, err // nothing of this batch was written
	}
	// On the connection of the batch before, the backend finishes that one
	// first, so the whole batch goes at once; on the other, the tail waits
	// for the batch before to be answered.
	prev := p.last
	whole := prev == nil || prev.conn == c
	buf, err := c.encode(p.types, body, c.buf[:0], false)
	if err == nil && whole {
		buf, err = c.encode(p.types, tail, buf, true)
	}
	if err != nil {
		return nil, true, err
	}
	if cap(buf) <= 1<<20 {
		c.buf = buf // keep ordinary buffers; let a huge one go
	}
	var tailBuf []byte
	if !whole {
		if tailBuf, err = c.encode(p.types, tail, nil, true); err != nil {
			return nil, true, err
		}
	}
	setDeadline(ctx, c.nc)
	call = &pipeCall{conn: c, done: make(chan struct{})}
	if _, err := c.nc.Write(buf); err != nil {
		// Written in part or not at all: the server may still have the
		// whole batch and commit it, so this is no fallback.
		c.fail(fmt.Errorf("write pipeline: %w", err))
		return nil, true, c.err
	}
	c.calls <- call
	p.last, p.at = call, i
	c.tailDone = nil
	if !whole {
		call.split = true
		done := make(chan struct{})
		c.tailDone = done
		go func() {
			defer close(done)
			select {
			case <-prev.done:
			case <-time.After(pipeTailWait):
			}
			setDeadline(ctx, c.nc)
			if _, err := c.nc.Write(tailBuf); err != nil {
				c.fail(fmt.Errorf("write pipeline: %w", err))
			}
		}()
	}
	for a, h := range to {
		p.spec[a] = h
	}
	return call, true, nil
}

// connAt returns connection i, under mu, once the tail of the last batch
// sent to it is written; a dead connection is replaced by a new one.
func (p *pipeline) connAt(ctx context.Context, i int) (*pipeConn, error) {
	c := p.conns[i]
	if c == nil {
		return p.redial(ctx, i)
	}
	if c.tailDone != nil {
		select {
		case <-c.tailDone: // written, or the connection failed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	select {
	case <-c.dead:
		close(c.calls) // its reader has answered what was written
		return p.redial(ctx, i)
	default:
		return c, nil
	}
}

// redial dials connection i anew.
func (p *pipeline) redial(ctx context.Context, i int) (*pipeConn, error) {
	p.conns[i] = nil
	c, err := p.dial(ctx)
	if err != nil {
		return nil, err
	}
	p.conns[i] = c
	return c, nil
}

// setDeadline bounds the next write to nc by ctx's deadline.
func setDeadline(ctx context.Context, nc net.Conn) {
	if d, ok := ctx.Deadline(); ok {
		nc.SetWriteDeadline(d)
	} else {
		nc.SetWriteDeadline(time.Time{})
	}
}

// forget drops the pipeline's heads of accounts whose batch failed.
func (p *pipeline) forget(accounts []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.forgetLocked(accounts)
}

// forgetLocked is forget for a caller holding mu.
func (p *pipeline) forgetLocked(accounts []string) {
	for _, a := range accounts {
		delete(p.spec, a)
	}
}

// wait returns the call's outcome, or ctx's error after closing the
// connection (which rolls back whatever has not committed).
func (p *pipeline) wait(ctx context.Context, call *pipeCall) error {
	select {
	case <-call.done:
		return call.err
	case <-ctx.Done():
		call.conn.fail(ctx.Err())
		<-call.done
		return ctx.Err()
	}
}

// encode appends the statements to buf as Bind and Execute messages of
// their prepared statements, then Sync if sync.
func (c *pipeConn) encode(m *pgtype.Map, stmts []pipeStatement, buf []byte, sync bool) ([]byte, error) {
	vals := make([]byte, 0, 4096)
	var err error
	for _, st := range stmts {
		sd := c.stmts[st.sql]
		if sd == nil {
			return nil, fmt.Errorf("write pipeline: statement not prepared: %.60s", st.sql)
		}
		if len(st.args) != len(sd.ParamOIDs) {
			return nil, fmt.Errorf("write pipeline: %d arguments for %d parameters: %.60s", len(st.args), len(sd.ParamOIDs), st.sql)
		}
		bind := pgproto3.Bind{PreparedStatement: sd.Name, ParameterFormatCodes: make([]int16, len(st.args)),
			Parameters: make([][]byte, len(st.args))}
		for i, arg := range st.args {
			oid := sd.ParamOIDs[i]
			start := len(vals)
			if out, ok := appendArray(vals, oid, arg); ok {
				vals = out
				bind.ParameterFormatCodes[i], bind.Parameters[i] = pgtype.BinaryFormatCode, vals[start:len(vals):len(vals)]
				continue
			}
			// Binary where the value has a binary encoding, as pgx chooses.
			format := int16(pgtype.TextFormatCode)
			if m.PlanEncode(oid, pgtype.BinaryFormatCode, arg) != nil {
				format = pgtype.BinaryFormatCode
			}
			// Encode appends to a non-nil buffer, and returns nil only for
			// NULL. Earlier values keep the array they were written to.
			if vals, err = m.Encode(oid, format, arg, vals); err != nil {
				// Not err itself: it quotes the value, which may be an
				// event's text.
				return nil, fmt.Errorf("write pipeline: argument %d (%T) of %.60q: no encoding for type %d", i+1, arg, st.sql, oid)
			}
			if vals == nil {
				return nil, errors.New("write pipeline: a NULL argument")
			}
			bind.ParameterFormatCodes[i], bind.Parameters[i] = format, vals[start:len(vals):len(vals)]
		}
		if buf, err = bind.Encode(buf); err != nil {
			return nil, err
		}
		if buf, err = (&pgproto3.Execute{}).Encode(buf); err != nil {
			return nil, err
		}
	}
	if sync {
		if buf, err = (&pgproto3.Sync{}).Encode(buf); err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// close closes the connection.
func (p *pipeline) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, c := range p.conns {
		if c != nil {
			c.fail(errors.New("write pipeline: closed"))
			close(c.calls)
			p.conns[i] = nil
		}
	}
}

// appendArray appends arg in PostgreSQL's binary array format, as pgx
// encodes it, when arg is a non-empty column of a batch (text, json, uuid,
// int8 or timestamptz elements); ok false leaves it to pgx. pgx reaches
// each element through reflection, and that was 15 % of the service's CPU
// under 1000-event batches. TestAppendArray holds the bytes to pgx's.
func appendArray(buf []byte, oid uint32, arg any) (_ []byte, ok bool) {
	// header: one dimension, no NULLs, the element type, n elements from 1.
	header := func(elem uint32, n int) []byte {
		buf = binary.BigEndian.AppendUint32(buf, 1)
		buf = binary.BigEndian.AppendUint32(buf, 0)
		buf = binary.BigEndian.AppendUint32(buf, elem)
		buf = binary.BigEndian.AppendUint32(buf, uint32(n))
		return binary.BigEndian.AppendUint32(buf, 1)
	}
	switch v := arg.(type) {
	case []string:
		elem := uint32(pgtype.TextOID)
		switch {
		case len(v) == 0:
			return buf, false
		case oid == pgtype.JSONArrayOID:
			elem = pgtype.JSONOID // json's binary form is its text
		case oid != pgtype.TextArrayOID:
			return buf, false
		}
		buf = header(elem, len(v))
		for _, s := range v {
			buf = binary.BigEndian.AppendUint32(buf, uint32(len(s)))
			buf = append(buf, s...)
		}
	case []uuid.UUID:
		if len(v) == 0 || oid != pgtype.UUIDArrayOID {
			return buf, false
		}
		buf = header(pgtype.UUIDOID, len(v))
		for _, id := range v {
			buf = binary.BigEndian.AppendUint32(buf, 16)
			buf = append(buf, id[:]...)
		}
	case []int64:
		if len(v) == 0 || oid != pgtype.Int8ArrayOID {
			return buf, false
		}
		buf = header(pgtype.Int8OID, len(v))
		for _, n := range v {
			buf = binary.BigEndian.AppendUint32(buf, 8)
			buf = binary.BigEndian.AppendUint64(buf, uint64(n))
		}
	case []time.Time:
		if len(v) == 0 || oid != pgtype.TimestamptzArrayOID {
			return buf, false
		}
		buf = header(pgtype.TimestamptzOID, len(v))
		for _, t := range v {
			buf = binary.BigEndian.AppendUint32(buf, 8)
			buf = binary.BigEndian.AppendUint64(buf, uint64(t.UnixMicro()-pgEpochMicros)) // pgTime's inverse
		}
	default:
		return buf, false
	}
	return buf, true
}
