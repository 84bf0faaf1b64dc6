package audit

import "fmt"

// ChainVerifier checks an account's events one by one in seq order, from
// seq 1, in constant memory.
type ChainVerifier struct {
	seq  int64
	hash string
}

// NewChainVerifier returns a verifier expecting the account's first event.
func NewChainVerifier() *ChainVerifier { return &ChainVerifier{hash: GenesisHash} }

// Check verifies that e is the next event of the chain: its seq follows,
// its prev_hash is the previous event's hash, and its hash is the hash of
// its own content. The error says which of these failed.
func (v *ChainVerifier) Check(e *Event) error {
	switch {
	case e.Seq != v.seq+1:
		return fmt.Errorf("seq %d: expected seq %d (an event is missing, inserted or out of order)", e.Seq, v.seq+1)
	case e.PrevHash != v.hash:
		return fmt.Errorf("seq %d: prev_hash does not match the hash of seq %d", e.Seq, v.seq)
	}
	h, err := ComputeHash(e.PrevHash, e)
	if err != nil {
		return fmt.Errorf("seq %d: %v", e.Seq, err)
	}
	if h != e.Hash {
		return fmt.Errorf("seq %d: hash does not match the event's content (the event was altered)", e.Seq)
	}
	v.seq, v.hash = e.Seq, e.Hash
	return nil
}

// Head returns the seq and hash of the last event checked.
func (v *ChainVerifier) Head() (int64, string) { return v.seq, v.hash }
