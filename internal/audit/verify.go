package audit

import "fmt"

// ChainVerifier checks an account's events one by one in seq order, in
// constant memory.
type ChainVerifier struct {
	seq  int64
	hash string
}

// NewChainVerifier returns a verifier expecting the account's first event.
func NewChainVerifier() *ChainVerifier { return &ChainVerifier{hash: GenesisHash} }

// NewChainVerifierAt returns a verifier expecting the event after the one
// with this seq and hash (trusted, e.g. from a signed checkpoint).
func NewChainVerifierAt(seq int64, hash string) *ChainVerifier {
	return &ChainVerifier{seq: seq, hash: hash}
}

// ChainError says where a chain breaks and why.
type ChainError struct {
	Seq    int64  // the first seq that does not verify
	Reason string // what is wrong there
}

func (e *ChainError) Error() string { return fmt.Sprintf("seq %d: %s", e.Seq, e.Reason) }

// Check verifies that e is the next event of the chain: its seq follows,
// its prev_hash is the previous event's hash, and its hash is the hash of
// its own content. The error is a *ChainError.
func (v *ChainVerifier) Check(e *Event) error {
	switch {
	case e.Seq > v.seq+1:
		return &ChainError{v.seq + 1, fmt.Sprintf("missing: the next event has seq %d (events were removed)", e.Seq)}
	case e.Seq != v.seq+1:
		return &ChainError{v.seq + 1, fmt.Sprintf("out of order: seq %d follows seq %d (events were inserted, duplicated or reordered)", e.Seq, v.seq)}
	case e.PrevHash != v.hash:
		return &ChainError{e.Seq, fmt.Sprintf("prev_hash does not match the hash of seq %d (an event was inserted or replaced)", v.seq)}
	}
	h, err := ComputeHash(e.PrevHash, e)
	if err != nil {
		return &ChainError{e.Seq, err.Error()}
	}
	if h != e.Hash {
		return &ChainError{e.Seq, "hash does not match the event's content (the event was altered)"}
	}
	v.seq, v.hash = e.Seq, e.Hash
	return nil
}

// Head returns the seq and hash of the last event checked.
func (v *ChainVerifier) Head() (int64, string) { return v.seq, v.hash }
