package gitstore

import (
	"bytes"
	"fmt"
	"os"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// loadSigner reads an armored OpenPGP private key and unlocks it.
func loadSigner(path, passphrase string) (*openpgp.Entity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading signing key: %w", err)
	}
	defer f.Close()
	list, err := openpgp.ReadArmoredKeyRing(f)
	if err != nil {
		return nil, fmt.Errorf("parsing signing key %s: %w", path, err)
	}
	for _, e := range list {
		if e.PrivateKey == nil {
			continue
		}
		if e.PrivateKey.Encrypted {
			if err := e.DecryptPrivateKeys([]byte(passphrase)); err != nil {
				return nil, fmt.Errorf("unlocking signing key %s: %w", path, err)
			}
		}
		return e, nil
	}
	return nil, fmt.Errorf("signing key %s holds no private key", path)
}

// sign sets c's PGP signature over its encoding without one, as git
// verify-commit checks it.
func sign(c *object.Commit, e *openpgp.Entity) error {
	unsigned := &plumbing.MemoryObject{}
	if err := c.EncodeWithoutSignature(unsigned); err != nil {
		return fmt.Errorf("encoding commit to sign: %w", err)
	}
	r, err := unsigned.Reader()
	if err != nil {
		return err
	}
	defer r.Close()
	var sig bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&sig, e, r, nil); err != nil {
		return fmt.Errorf("signing commit: %w", err)
	}
	c.PGPSignature = sig.String()
	return nil
}
