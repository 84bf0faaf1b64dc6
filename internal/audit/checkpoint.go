package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Checkpoint is a signed statement that an account's chain had this head
// at this time. Each checkpoint signs the previous one's signature too, so
// checkpoints form a chain of their own: rewriting history before the
// latest checkpoint means forging a signature.
type Checkpoint struct {
	SourceAccountID string    `json:"source_account_id"`
	Seq             int64     `json:"seq"`
	Hash            string    `json:"hash"`
	CreatedAt       time.Time `json:"created_at"`
	PrevSignature   string    `json:"prev_signature"` // "" for an account's first checkpoint
	KeyID           string    `json:"key_id"`
	Signature       string    `json:"signature"` // standard base64 of the 64-byte Ed25519 signature
}

// MarshalJSON writes created_at in TimeFormat, the form that is signed.
func (c Checkpoint) MarshalJSON() ([]byte, error) {
	type plain Checkpoint
	return json.Marshal(struct {
		plain
		CreatedAt string `json:"created_at"`
	}{plain(c), FormatTime(c.CreatedAt)})
}

// CheckpointMessage returns the bytes a checkpoint's signature covers: the
// RFC 8785 form of {"account","hash","previous_signature","seq","time"}.
// See docs/CHAIN.md.
func CheckpointMessage(c *Checkpoint) []byte {
	var b bytes.Buffer
	b.WriteString(`{"account":`)
	writeString(&b, c.SourceAccountID)
	b.WriteString(`,"hash":`)
	writeString(&b, c.Hash)
	b.WriteString(`,"previous_signature":`)
	writeString(&b, c.PrevSignature)
	b.WriteString(`,"seq":`)
	b.WriteString(strconv.FormatInt(c.Seq, 10))
	b.WriteString(`,"time":`)
	writeString(&b, FormatTime(c.CreatedAt))
	b.WriteByte('}')
	return b.Bytes()
}

// KeyID names a public key: the first 16 hex digits of its SHA-256.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// Signer signs checkpoints with one Ed25519 key.
type Signer struct {
	key   ed25519.PrivateKey
	keyID string
}

// NewSigner returns a signer for key.
func NewSigner(key ed25519.PrivateKey) *Signer {
	return &Signer{key: key, keyID: KeyID(key.Public().(ed25519.PublicKey))}
}

// PublicKey returns the key that verifies this signer's checkpoints.
func (s *Signer) PublicKey() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// KeyID returns the id of the signer's key.
func (s *Signer) KeyID() string { return s.keyID }

// Sign sets c's KeyID and Signature.
func (s *Signer) Sign(c *Checkpoint) error {
	c.CreatedAt = truncTime(c.CreatedAt)
	c.KeyID = s.keyID
	c.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(s.key, CheckpointMessage(c)))
	return nil
}

// VerifyCheckpoint checks c's signature with pub.
func VerifyCheckpoint(c *Checkpoint, pub ed25519.PublicKey) error {
	if c.KeyID != KeyID(pub) {
		return fmt.Errorf("checkpoint at seq %d is signed by key %s, not by key %s", c.Seq, c.KeyID, KeyID(pub))
	}
	sig, err := base64.StdEncoding.DecodeString(c.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("checkpoint at seq %d: signature is not 64 bytes of base64", c.Seq)
	}
	if !ed25519.Verify(pub, CheckpointMessage(c), sig) {
		return fmt.Errorf("checkpoint at seq %d: signature does not verify (forged or altered)", c.Seq)
	}
	return nil
}

// ParseSigningKey reads an Ed25519 private key from its standard base64
// form: the 32-byte seed or the 64-byte private key.
func ParseSigningKey(s string) (ed25519.PrivateKey, error) {
	b, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace([]byte(s))))
	if err != nil {
		return nil, errors.New("not standard base64")
	}
	switch len(b) {
	case ed25519.SeedSize:
		return ed25519.NewKeyFromSeed(b), nil
	case ed25519.PrivateKeySize:
		key := ed25519.PrivateKey(b)
		if !bytes.Equal(ed25519.NewKeyFromSeed(b[:32]).Public().(ed25519.PublicKey), b[32:]) {
			return nil, errors.New("the 64 bytes are not an Ed25519 private key")
		}
		return key, nil
	}
	return nil, fmt.Errorf("%d bytes; want a 32-byte seed or a 64-byte private key", len(b))
}

// ParsePublicKey reads an Ed25519 public key from standard base64.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace([]byte(s))))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("not the standard base64 of 32 bytes")
	}
	return ed25519.PublicKey(b), nil
}
