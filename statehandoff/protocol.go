package statehandoff

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"

	"github.com/google/uuid"

	"github.com/grapehq/grape/localstate"
)

// MaxOffer bounds what a receiver reads from one connection: the state and
// its ten kept versions. Terraform states are KB to a few MB.
const MaxOffer = 512 << 20

// offer is what the sender writes after the handshake: the one-time token
// and the state directory, each file with its SHA-256.
type offer struct {
	Move    uuid.UUID         `json:"move"`
	Token   string            `json:"token"`
	Files   []localstate.File `json:"files"`
	Digests map[string]string `json:"digests"`
}

// reply is the receiver's answer once the move is done or failed.
type reply struct {
	OK          bool   `json:"ok"`
	Error       string `json:"error,omitempty"`
	StateSHA256 string `json:"state_sha256,omitempty"`
}

func newOffer(move uuid.UUID, token string, files []localstate.File) offer {
	o := offer{Move: move, Token: token, Files: files, Digests: map[string]string{}}
	for _, f := range files {
		o.Digests[f.Name] = f.SHA256()
	}
	return o
}

// verify checks every file against the digest the sender computed before
// sending, and that no file is missing or extra.
func (o offer) verify() error {
	if len(o.Digests) != len(o.Files) {
		return fmt.Errorf("the offer lists %d digests for %d files", len(o.Digests), len(o.Files))
	}
	for _, f := range o.Files {
		want, ok := o.Digests[f.Name]
		if !ok {
			return fmt.Errorf("file %s has no digest", f.Name)
		}
		if got := f.SHA256(); got != want {
			return fmt.Errorf("file %s: SHA-256 %s, the sender sent %s: corrupted in transit", f.Name, got, want)
		}
	}
	return localstate.ValidateFiles(o.Files)
}

func (o offer) stateSHA256() string { return o.Digests[localstate.StateFile] }

func readOffer(r io.Reader) (offer, error) {
	var o offer
	dec := json.NewDecoder(io.LimitReader(r, MaxOffer))
	if err := dec.Decode(&o); err != nil {
		return offer{}, fmt.Errorf("reading the offer: %w", err)
	}
	return o, nil
}

// newToken draws the one-time token and its SHA-256 (hex), which is what
// the row holds: a reader of the database cannot present the token.
func newToken() (token, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("drawing a one-time token: %w", err)
	}
	token = hex.EncodeToString(b)
	return token, tokenHash(token), nil
}

func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// tokenMatches compares in constant time.
func tokenMatches(token, wantHash string) bool {
	return subtle.ConstantTimeCompare([]byte(tokenHash(token)), []byte(wantHash)) == 1
}
