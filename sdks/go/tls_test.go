package ferrohsm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

type pki struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	der  []byte
}

func newCert(t *testing.T, cn string, parent *pki, isCA bool, usage x509.ExtKeyUsage) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		IsCA:                  isCA,
		BasicConstraintsValid: true,
	}
	if !isCA {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{usage}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"localhost"}
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &pki{cert: cert, key: key, der: der}
}

func (p *pki) files(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	keyDER, err := x509.MarshalPKCS8PrivateKey(p.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func (p *pki) tlsCert() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{p.der}, PrivateKey: p.key}
}

// A server that demands a client certificate from its own CA: the CA file option trusts the
// server, and the client certificate options get the SDK in.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newCert(t, "test CA", nil, true, 0)
	server := newCert(t, "localhost", ca, false, x509.ExtKeyUsageServerAuth)
	client := newCert(t, "ci-pipeline", ca, false, x509.ExtKeyUsageClientAuth)
	caFile, _ := ca.files(t, dir, "ca")
	clientCert, clientKey := client.files(t, dir, "client")

	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 || r.TLS.PeerCertificates[0].Subject.CommonName != "ci-pipeline" {
			http.Error(w, "no client certificate", 401)
			return
		}
		_, _ = io.WriteString(w, keyJSON)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{server.tlsCert()}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes below are expected
	srv.StartTLS()
	defer srv.Close()

	ctx := context.Background()
	for name, opts := range map[string][]Option{
		"files":  {WithCAFile(caFile), WithClientCertificateFiles(clientCert, clientKey)},
		"values": {WithRootCAs(pool), WithClientCertificate(client.tlsCert())},
		"config": {WithTLSConfig(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{client.tlsCert()}})},
	} {
		c, err := New(srv.URL, opts...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := c.DescribeKey(ctx, "k"); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	// Without the client certificate the handshake fails.
	c, _ := New(srv.URL, WithCAFile(caFile), WithoutRetries())
	if _, err := c.DescribeKey(ctx, "k"); err == nil {
		t.Fatal("connected without a client certificate")
	}
	// Without the CA the server is not trusted.
	other := newCert(t, "other CA", nil, true, 0)
	otherFile, _ := other.files(t, dir, "other")
	c, _ = New(srv.URL, WithCAFile(otherFile), WithClientCertificateFiles(clientCert, clientKey))
	if _, err := c.DescribeKey(ctx, "k"); err == nil {
		t.Fatal("trusted a server signed by another CA")
	}
	// A CA file that holds no certificate is refused up front.
	if _, err := New(srv.URL, WithCAFile(clientKey)); err == nil {
		t.Fatal("a key file was accepted as a CA file")
	}
}

func TestNewFromEnvReadsClientCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := newCert(t, "test CA", nil, true, 0)
	server := newCert(t, "localhost", ca, false, x509.ExtKeyUsageServerAuth)
	client := newCert(t, "svc", ca, false, x509.ExtKeyUsageClientAuth)
	caFile, _ := ca.files(t, dir, "ca")
	certFile, keyFile := client.files(t, dir, "client")
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer from-env" {
			http.Error(w, "bad token", 401)
			return
		}
		_, _ = io.WriteString(w, keyJSON)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{server.tlsCert()}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.StartTLS()
	defer srv.Close()
	t.Setenv(EnvServer, srv.URL)
	t.Setenv(EnvCACert, caFile)
	t.Setenv(EnvToken, "from-env")
	t.Setenv(EnvClientCert, certFile)
	t.Setenv(EnvClientKey, keyFile)
	c, err := NewFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DescribeKey(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
}
