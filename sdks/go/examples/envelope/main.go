// Command envelope shows envelope encryption with FerroHSM: a fresh data key encrypts the
// data locally with AES-256-GCM, and only the data key goes to the HSM, wrapped (RFC 5649)
// under an AES key that never leaves it. To read the data back, the HSM unwraps the data key
// and the data is decrypted locally.
//
//	go run ./examples/envelope [-key envelope-kek] [-data "text to protect"]
//
// It reads FERROHSM_SERVER, FERROHSM_CA_CERT and FERROHSM_TOKEN (admin or operator, or a
// service granted the key).
package main

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"slices"
	"time"

	ferrohsm "github.com/ferrohsm/ferrohsm/sdks/go"
)

// Envelope is what would be stored: the data encrypted locally, and the data key wrapped by
// the HSM.
type Envelope struct {
	KeyID      string `json:"key_id"`
	WrappedKey string `json:"wrapped_key"` // fhsm:v<N>:…
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

func main() {
	keyName := flag.String("key", "envelope-kek", "the key-encryption key's name (created as aes-256-gcm for wrap/unwrap if missing)")
	data := flag.String("data", "the quarterly numbers", "the data to protect")
	flag.Parse()
	if err := run(*keyName, []byte(*data)); err != nil {
		log.Fatal(err)
	}
}

func run(keyName string, data []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client, err := ferrohsm.NewFromEnv(ferrohsm.WithUserAgent("envelope-example"))
	if err != nil {
		return err
	}
	kek, err := wrappingKey(ctx, client, keyName)
	if err != nil {
		return err
	}

	// Seal: a fresh data key per message.
	dataKey := make([]byte, 32)
	if _, err := rand.Read(dataKey); err != nil {
		return err
	}
	wrapped, err := client.Wrap(ctx, kek.ID, ferrohsm.WrapRequest{KeyMaterial: dataKey})
	if err != nil {
		return fmt.Errorf("wrapping the data key: %w", err)
	}
	env := Envelope{KeyID: kek.ID, WrappedKey: wrapped.Wrapped}
	// The wrapped key is bound to the ciphertext as associated data.
	env.Nonce, env.Ciphertext, err = sealLocally(dataKey, data, []byte(env.WrappedKey))
	clear(dataKey) // only the wrapped form is kept
	if err != nil {
		return err
	}
	stored, _ := json.MarshalIndent(env, "", "  ")
	fmt.Printf("stored envelope:\n%s\n", stored)

	// Open: the HSM unwraps the data key, the data is decrypted here.
	unwrapped, err := client.Unwrap(ctx, env.KeyID, ferrohsm.UnwrapRequest{Wrapped: env.WrappedKey})
	if err != nil {
		return fmt.Errorf("unwrapping the data key: %w", err)
	}
	plaintext, err := openLocally(unwrapped.KeyMaterial, env.Nonce, env.Ciphertext, []byte(env.WrappedKey))
	clear(unwrapped.KeyMaterial)
	if err != nil {
		return err
	}
	if !bytes.Equal(plaintext, data) {
		return errors.New("the round trip changed the data")
	}
	fmt.Printf("decrypted with the unwrapped data key (key %s version %d): %q\n", kek.Name, unwrapped.KeyVersion, plaintext)
	return nil
}

// wrappingKey returns the named key, creating it (wrap and unwrap only) when missing.
func wrappingKey(ctx context.Context, client *ferrohsm.Client, name string) (*ferrohsm.KeyInfo, error) {
	key, err := client.DescribeKey(ctx, name)
	if errors.Is(err, ferrohsm.ErrNotFound) {
		key, err = client.CreateKey(ctx, ferrohsm.CreateKeyRequest{
			Name:        name,
			Description: "key-encryption key (examples/envelope)",
			Algorithm:   ferrohsm.AlgorithmAES256GCM,
			Usages:      []ferrohsm.Usage{ferrohsm.UsageWrap, ferrohsm.UsageUnwrap},
		})
		if errors.Is(err, ferrohsm.ErrConflict) { // created by a concurrent run
			key, err = client.DescribeKey(ctx, name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("the key-encryption key %s: %w", name, err)
	}
	if !slices.Contains(key.Usages, ferrohsm.UsageWrap) || !slices.Contains(key.Usages, ferrohsm.UsageUnwrap) {
		return nil, fmt.Errorf("the key %s (%s) does not allow wrap and unwrap", name, key.Algorithm)
	}
	return key, nil
}

func sealLocally(key, plaintext, aad []byte) (nonce, ciphertext []byte, err error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, nil, err
	}
	nonce = make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, nil, err
	}
	return nonce, gcm.Seal(nil, nonce, plaintext, aad), nil
}

func openLocally(key, nonce, ciphertext, aad []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return gcm.Open(nil, nonce, ciphertext, aad)
}
