package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"time"
)

// benchConn is one keep-alive HTTP/1.1 connection of the load generator:
// each request is one write, and the answer is read by a small parser into
// a buffer the connection keeps. On two cores the generator shares the CPU
// with the service and PostgreSQL, and net/http's client (two goroutines
// per connection and a handoff between them and the caller on every
// request, a header map per answer) cost it about 50 µs per single-event
// POST; pgbench, the other side of the comparison, is a lean C client. Not
// safe for concurrent use: one per worker.
type benchConn struct {
	addr   string // host:port to dial
	host   string // the Host header
	tls    *tls.Config
	secret string

	conn net.Conn
	stop func() bool // unregisters the close on ctx's end
	br   *bufio.Reader
	wbuf []byte
	body []byte
}

// benchConnBuffer is the read buffer: the longest status or header line
// the parser accepts, and the unit bodies are read in.
const benchConnBuffer = 64 << 10

func newBenchConn(base, secret string) (*benchConn, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	c := &benchConn{host: u.Host, secret: secret}
	port := u.Port()
	switch u.Scheme {
	case "http":
		if port == "" {
			port = "80"
		}
	case "https":
		if port == "" {
			port = "443"
		}
		c.tls = &tls.Config{ServerName: u.Hostname()}
	default:
		return nil, fmt.Errorf("unsupported scheme %q", u.Scheme)
	}
	c.addr = net.JoinHostPort(u.Hostname(), port)
	return c, nil
}

// close drops the connection; the next request dials again.
func (c *benchConn) close() {
	if c.conn == nil {
		return
	}
	c.stop()
	c.conn.Close()
	c.conn, c.br = nil, nil
}

func (c *benchConn) dial(ctx context.Context) error {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return err
	}
	if c.tls != nil {
		tc := tls.Client(conn, c.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return err
		}
		conn = tc
	}
	c.conn = conn
	c.stop = context.AfterFunc(ctx, func() { conn.Close() })
	if c.br == nil {
		c.br = bufio.NewReaderSize(conn, benchConnBuffer)
	} else {
		c.br.Reset(conn)
	}
	return nil
}

// do sends one request and reads the whole answer. The body it returns is
// valid until the next call. A transport error closes the connection. The
// end of the context a connection was dialled with closes it, which ends a
// request in flight; a request with an ended context is not sent.
func (c *benchConn) do(ctx context.Context, method, path, account string, body []byte) (int, []byte, error) {
	if err := ctx.Err(); err != nil {
		return 0, nil, err
	}
	if c.conn == nil {
		if err := c.dial(ctx); err != nil {
			return 0, nil, err
		}
	}
	c.conn.SetDeadline(time.Now().Add(requestTimeout))
	w := append(c.wbuf[:0], method...)
	w = append(w, ' ')
	w = append(w, path...)
	w = append(w, " HTTP/1.1\r\nHost: "...)
	w = append(w, c.host...)
	w = append(w, "\r\nAuthorization: Bearer "...)
	w = append(w, c.secret...)
	w = append(w, "\r\nX-Source-Account-Id: "...)
	w = append(w, account...)
	if body != nil {
		w = append(w, "\r\nContent-Type: application/json\r\nContent-Length: "...)
		w = strconv.AppendInt(w, int64(len(body)), 10)
	}
	w = append(w, "\r\n\r\n"...)
	w = append(w, body...)
	c.wbuf = w
	if _, err := c.conn.Write(w); err != nil {
		c.close()
		return 0, nil, err
	}
	status, keep, err := c.readResponse(method)
	if err != nil {
		c.close()
		return 0, nil, err
	}
	if !keep {
		c.close()
	}
	return status, c.body, nil
}

var errBadResponse = errors.New("malformed HTTP response")

// readResponse reads a status line, the headers and the body (by
// Content-Length, chunked, or to the end of the connection) into c.body.
// keep reports whether the connection may carry another request.
func (c *benchConn) readResponse(method string) (status int, keep bool, err error) {
	for {
		line, err := c.line()
		if err != nil {
			return 0, false, err
		}
		// "HTTP/1.1 201 Created"
		if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
			return 0, false, fmt.Errorf("%w: status line %q", errBadResponse, line)
		}
		status, err = strconv.Atoi(string(line[9:12]))
		if err != nil || status < 100 {
			return 0, false, fmt.Errorf("%w: status line %q", errBadResponse, line)
		}
		keep = line[7] == '1'
		length, chunked := int64(-1), false
		for {
			h, err := c.line()
			if err != nil {
				return 0, false, err
			}
			if len(h) == 0 {
				break
			}
			name, value, ok := bytes.Cut(h, []byte(":"))
			if !ok {
				return 0, false, fmt.Errorf("%w: header line %q", errBadResponse, h)
			}
			value = bytes.TrimSpace(value)
			switch {
			case bytes.EqualFold(name, []byte("Content-Length")):
				length, err = strconv.ParseInt(string(value), 10, 64)
				if err != nil || length < 0 {
					return 0, false, fmt.Errorf("%w: Content-Length %q", errBadResponse, value)
				}
			case bytes.EqualFold(name, []byte("Transfer-Encoding")):
				chunked = bytes.EqualFold(value, []byte("chunked"))
			case bytes.EqualFold(name, []byte("Connection")):
				if bytes.EqualFold(value, []byte("close")) {
					keep = false
				}
			}
		}
		if status < 200 { // 100 Continue and the like: the answer follows
			continue
		}
		c.body = c.body[:0]
		switch {
		case method == "HEAD" || status == 204 || status == 304:
		case chunked:
			err = c.readChunked()
		case length >= 0:
			err = c.readN(length)
		default:
			keep = false
			c.body, err = appendAll(c.body, c.br)
		}
		return status, keep, err
	}
}

// line returns the next line without its CRLF; it is valid until the next
// read.
func (c *benchConn) line() ([]byte, error) {
	l, err := c.br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("%w: a line longer than %d bytes", errBadResponse, benchConnBuffer)
		}
		if errors.Is(err, io.EOF) {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return bytes.TrimSuffix(l[:len(l)-1], []byte("\r")), nil
}

func (c *benchConn) readN(n int64) error {
	if n > 1<<30 {
		return fmt.Errorf("%w: a body of %d bytes", errBadResponse, n)
	}
	start := len(c.body)
	c.body = slices.Grow(c.body, int(n))[:start+int(n)]
	_, err := io.ReadFull(c.br, c.body[start:])
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func (c *benchConn) readChunked() error {
	for {
		l, err := c.line()
		if err != nil {
			return err
		}
		size, _, _ := bytes.Cut(l, []byte(";"))
		n, err := strconv.ParseInt(string(bytes.TrimSpace(size)), 16, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("%w: chunk size %q", errBadResponse, l)
		}
		if n == 0 {
			for { // trailers, up to the empty line
				t, err := c.line()
				if err != nil {
					return err
				}
				if len(t) == 0 {
					return nil
				}
			}
		}
		if err := c.readN(n); err != nil {
			return err
		}
		if crlf, err := c.line(); err != nil || len(crlf) != 0 {
			return fmt.Errorf("%w: no CRLF after a chunk", errBadResponse)
		}
	}
}

func appendAll(dst []byte, r io.Reader) ([]byte, error) {
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}
