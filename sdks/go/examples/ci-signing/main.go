// Command ci-signing signs a release artefact with an ec-p256 key held by FerroHSM, then
// fetches the key's public half and verifies the signature locally with crypto/ecdsa, as a
// consumer of the release would.
//
//	go run ./examples/ci-signing -file dist/app.tar.gz [-key ci-release-signing] [-out app.sig]
//
// It reads FERROHSM_SERVER, FERROHSM_CA_CERT and FERROHSM_TOKEN (a token whose role may
// create keys and sign: admin or operator, or a service granted the key by a tag policy).
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	ferrohsm "github.com/ferrohsm/ferrohsm/sdks/go"
)

func main() {
	keyName := flag.String("key", "ci-release-signing", "the signing key's name (created as ec-p256 if missing)")
	file := flag.String("file", "", "the artefact to sign (required)")
	out := flag.String("out", "", "write the DER signature here (openssl dgst -sha256 -verify pub.pem -signature FILE reads it)")
	flag.Parse()
	if *file == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*keyName, *file, *out); err != nil {
		log.Fatal(err)
	}
}

func run(keyName, file, out string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client, err := ferrohsm.NewFromEnv(ferrohsm.WithUserAgent("ci-signing-example"))
	if err != nil {
		return err
	}

	key, err := signingKey(ctx, client, keyName)
	if err != nil {
		return err
	}

	// Hash locally and sign the digest: the artefact never leaves the machine, and its size
	// does not matter.
	digest, err := sha256File(file)
	if err != nil {
		return err
	}
	signed, err := client.Sign(ctx, key.ID, ferrohsm.SignRequest{
		Digest:    digest,
		Algorithm: ferrohsm.SchemeECDSAP256SHA256,
	}, ferrohsm.WithRequestID("ci-signing-"+time.Now().UTC().Format("20060102T150405Z")))
	if err != nil {
		return fmt.Errorf("signing: %w", err)
	}

	// The public key of the version that signed, as PEM (and DER, and JWK).
	pub, err := client.PublicKey(ctx, key.ID, signed.KeyVersion)
	if err != nil {
		return fmt.Errorf("fetching the public key: %w", err)
	}
	block, _ := pem.Decode([]byte(pub.PEM))
	if block == nil || block.Type != "PUBLIC KEY" {
		return errors.New("the public key is not a PEM PUBLIC KEY block")
	}
	parsed, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return fmt.Errorf("parsing the public key: %w", err)
	}
	ecPub, ok := parsed.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("the public key is a %T, not ECDSA", parsed)
	}
	if !ecdsa.VerifyASN1(ecPub, digest, signed.Signature) {
		return errors.New("the signature does NOT verify locally")
	}

	if out != "" {
		if err := os.WriteFile(out, signed.Signature, 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("artefact:   %s (sha256 %x)\n", file, digest)
	fmt.Printf("key:        %s (%s, id %s, version %d)\n", key.Name, key.Algorithm, key.ID, signed.KeyVersion)
	fmt.Printf("signature:  %s\n", base64.StdEncoding.EncodeToString(signed.Signature))
	fmt.Printf("verified locally with crypto/ecdsa against the key's public PEM: OK\n")
	fmt.Print(pub.PEM)
	return nil
}

// signingKey returns the named key, creating it as ec-p256 when it does not exist.
func signingKey(ctx context.Context, client *ferrohsm.Client, name string) (*ferrohsm.KeyInfo, error) {
	key, err := client.DescribeKey(ctx, name)
	if errors.Is(err, ferrohsm.ErrNotFound) {
		key, err = client.CreateKey(ctx, ferrohsm.CreateKeyRequest{
			Name:        name,
			Description: "release signing (examples/ci-signing)",
			Algorithm:   ferrohsm.AlgorithmECP256,
			Tags:        map[string]string{"purpose": "ci-signing"},
		})
		if errors.Is(err, ferrohsm.ErrConflict) { // created by a concurrent run
			key, err = client.DescribeKey(ctx, name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("the signing key %s: %w", name, err)
	}
	if key.Algorithm != ferrohsm.AlgorithmECP256 {
		return nil, fmt.Errorf("the key %s is %s, not ec-p256", name, key.Algorithm)
	}
	if key.State != ferrohsm.KeyStateActive {
		return nil, fmt.Errorf("the key %s is %s", name, key.State)
	}
	return key, nil
}

func sha256File(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}
