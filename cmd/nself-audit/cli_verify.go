package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/nself-org/nself-audit/client"
)

const verifyUsage = `usage: nself-audit verify --file events.ndjson [--checkpoints checkpoints.json --public-key KEY ...] [--partial]
       nself-audit verify [--from-seq N] [--to-seq N] [--account ID] [--json|--table]

With --file, checks an export offline, with no server and no database:
every hash and every link of each account's chain, and with --checkpoints
and --public-key each signed checkpoint (docs/CHAIN.md). Exit 0 when
everything verifies, 1 when something does not, 2 on a usage error or an
unreadable file.

Without --file, asks the running service to recompute the account's chain
from its stored rows (GET /api/v1/verify) and prints what it found. Exit 0
when the chain verifies, 1 when it does not (or the service refused or
could not be reached), 2 on a usage error.

  --from-seq N, --to-seq N   check only this range of the chain

` + outputUsage + "\n" + commonUsage

// verifyVerb is `nself-audit verify`: offline with --file (verifyFile),
// else against the service.
func verifyVerb(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	for _, a := range args {
		switch name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "="); {
		case a == "--":
		case !strings.HasPrefix(a, "-"):
		case name == "h" || name == "help":
			fmt.Fprint(stdout, verifyUsage)
			return exitOK
		case name == "file" || name == "checkpoints" || name == "public-key" || name == "partial":
			return verifyFile(args, stdout, stderr)
		}
	}
	c := newCLI(ctx, "verify", verifyUsage, getenv, stdout, stderr)
	fs := c.flags(true)
	from := fs.Int64("from-seq", 0, "")
	to := fs.Int64("to-seq", 0, "")
	pos, code, done := c.parse(fs, args)
	if done {
		return code
	}
	switch {
	case len(pos) > 0:
		return c.usageError("unexpected argument %q (to verify a file, use --file)", pos[0])
	case *from < 0 || *to < 0:
		return c.usageError("--from-seq and --to-seq: must be 1 or more")
	case *from > 0 && *to > 0 && *from > *to:
		return c.usageError("--from-seq: must not be greater than --to-seq")
	}
	cl, code := c.client()
	if cl == nil {
		return code
	}
	res, err := cl.Verify(c.ctx, client.SeqRange{FromSeq: *from, ToSeq: *to})
	if err != nil {
		return c.fail(err)
	}
	if c.jsonOut() {
		c.printJSON(res)
	} else if res.OK {
		fmt.Fprintf(c.stdout, "ok: account %s: %d events verify on the server; head seq %d, hash %s\n    %s\n",
			c.accountName(), res.Checked, res.Head.Seq, res.Head.Hash, res.Reason)
	} else {
		fmt.Fprintf(c.stdout, "FAIL: account %s: first bad seq %d: %s\n    %d events verified before it; last good seq %d, hash %s\n",
			c.accountName(), *res.FirstBrokenSeq, res.Reason, res.Checked, res.Head.Seq, res.Head.Hash)
	}
	if !res.OK {
		return exitFailure
	}
	return exitOK
}
