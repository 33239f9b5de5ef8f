package ferrohsm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"testing"
	"time"
)

// Answers captured from a dev server: decoding them into the typed responses and serialising
// those back must give the same JSON (null fields may become absent), and unknown fields from
// a newer server are tolerated.
var serverAnswers = map[string]struct {
	body string
	into func() any
}{
	"revoked key": {`{"id":"01a232d7-7f42-7210-9722-19bdd0126137","name":"r1-rev","description":"","algorithm":"aes-256-gcm","usages":["encrypt","decrypt","wrap","unwrap"],"tags":{"team":"r1"},"state":"revoked","revocation":{"reason":"compromised","comment":null,"at":"2026-12-01T18:21:53.689649558Z"},"destroy_after":null,"destroyed_at":null,"current_version":1,"versions":[{"version":1,"created_at":"2026-12-01T18:21:53.346786685Z","state":"active","encryptions":1048577}],"created_at":"2026-12-01T18:21:53.346786685Z","updated_at":"2026-12-01T18:21:53.689649558Z","created_by":"scn-operator","custody":"sealed"}`,
		func() any { return new(KeyInfo) }},
	"pending destruction": {`{"id":"01a232d7-8dd6-74ad-b71a-3e30a416c7d1","name":"r1-gone","description":"","algorithm":"ec-p256","usages":["sign","verify"],"tags":{"team":"r1"},"state":"pending_destruction","revocation":null,"destroy_after":"2026-12-01T19:21:57.108448424Z","destroyed_at":null,"current_version":1,"versions":[{"version":1,"created_at":"2026-12-01T18:21:57.07852914Z","state":"active","encryptions":0}],"created_at":"2026-12-01T18:21:57.07852914Z","updated_at":"2026-12-01T18:21:57.108448424Z","created_by":"scn-operator","custody":"pkcs11"}`,
		func() any { return new(KeyInfo) }},
	"public key": {`{"key_id":"01a232e6-8a1b-720f-a2b2-a550b26a83bd","key_version":1,"algorithm":"ec-p256","pem":"-----BEGIN PUBLIC KEY-----\r\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE6T9GVA6ceP7K8D6o5CxyYITlzYlF\r\nSEvMKPYIy4CL757ndMJ8jQoFMeIS5MdoiZVPknLaK+8AkiUsowW7L2SpnA==\r\n-----END PUBLIC KEY-----\r\n","der":"MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE6T9GVA6ceP7K8D6o5CxyYITlzYlFSEvMKPYIy4CL757ndMJ8jQoFMeIS5MdoiZVPknLaK+8AkiUsowW7L2SpnA==","jwk":{"kty":"EC","crv":"P-256","x":"6T9GVA6ceP7K8D6o5CxyYITlzYlFSEvMKPYIy4CL754","y":"53TCfI0KBTHiEuTHaImVT5Jy2ivvAJIlLKMFuy9kqZw"}}`,
		func() any { return new(PublicKeyInfo) }},
	"audit page": {`{"records":[{"type":"record","v":1,"seq":1,"id":"01a232d8-1672-7ae7-93de-4ded2a393494","ts":"2026-12-01T18:22:32.051003894Z","actor":"operator","action":"create_key","key_id":"01a232d8-166f-7791-9c5c-f7bd6d97c238","key_version":1,"outcome":"success","request_id":"01a232d8-166e-7208-b14d-7ddc641a72e6","session":"01a232d8-0e28-7764-bfd2-4e144e95a88b","client_fingerprint":null,"source_ip":"127.0.0.1","message":"state active","prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","hash":"9b810c9b6eea9ffb540509da20d0c06d773a8569e2c5041f26e09124a38de622","hmac":"50bac6c7aa8a7031776a52361fbc7d87a0988793669c0d7aeaedc35f92ebfc8e"}],"next_cursor":"1"}`,
		func() any { return new(AuditPage) }},
	"approval":           {approvalJSON(approvalID, "approved"), func() any { return new(ApprovalInfo) }},
	"signed":             {`{"key_id":"01a232d7-2fb8-7365-933d-f4a4d1f92d8d","key_version":1,"algorithm":"ecdsa-p256-sha256","signature":"MEUCIQDXF/+klYZ12s6C76IznqFF78QqS9Jbnvs4dS8dPC9qngIgL+ZMwlZN9n6ntgm5cLJYRU1tVBis20h2PVfkHVhsscY="}`, func() any { return new(Signed) }},
	"verified":           {`{"key_id":"01a232d7-2fb8-7365-933d-f4a4d1f92d8d","key_version":1,"algorithm":"ecdsa-p256-sha256","valid":false}`, func() any { return new(Verified) }},
	"audit verification": {`{"valid":true,"records":63,"signatures_checked":1,"first_seq":1,"last_seq":63,"partial":false}`, func() any { return new(AuditVerification) }},
}

func TestServerAnswersRoundTrip(t *testing.T) {
	for name, a := range serverAnswers {
		v := a.into()
		if err := json.Unmarshal([]byte(a.body), v); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		back, err := asJSON(v)
		if err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(bytes.NewReader([]byte(a.body)))
		dec.UseNumber()
		var orig map[string]any
		if err := dec.Decode(&orig); err != nil {
			t.Fatal(err)
		}
		// Equal once nulls are dropped (an optional field the server sends as null may be
		// left out), arrays and all.
		if !equalJSON(dropNulls(orig), dropNulls(back)) {
			t.Errorf("%s: round trip gave %s, want %s", name, show(dropNulls(back)), show(dropNulls(orig)))
		}
		// A newer server's extra fields are ignored.
		withExtra := a.body[:len(a.body)-1] + `,"added_in_v2":{"x":1}}`
		if err := json.Unmarshal([]byte(withExtra), a.into()); err != nil {
			t.Errorf("%s with an unknown field: %v", name, err)
		}
	}
}

func TestTypedFieldsDecode(t *testing.T) {
	var k KeyInfo
	_ = json.Unmarshal([]byte(serverAnswers["revoked key"].body), &k)
	if k.State != KeyStateRevoked || k.Revocation.Reason != RevocationCompromised || k.Revocation.Comment != "" ||
		k.Revocation.At.IsZero() || k.Usages[3] != UsageUnwrap || k.Versions[0].State != VersionStateActive ||
		k.Algorithm != AlgorithmAES256GCM || k.Versions[0].Encryptions != 1048577 || k.Custody != CustodySealed {
		t.Fatalf("%+v", k)
	}
	_ = json.Unmarshal([]byte(serverAnswers["pending destruction"].body), &k)
	if k.DestroyAfter == nil || !k.DestroyAfter.Equal(time.Date(2026, 12, 1, 19, 21, 57, 108448424, time.UTC)) || k.Revocation != nil ||
		k.Custody != CustodyPKCS11 {
		t.Fatalf("%+v", k)
	}
	// The PEM (CRLF line ends) and the DER are the same P-256 key.
	var pk PublicKeyInfo
	_ = json.Unmarshal([]byte(serverAnswers["public key"].body), &pk)
	block, _ := pem.Decode([]byte(pk.PEM))
	if block == nil || !bytes.Equal(block.Bytes, pk.DER) {
		t.Fatal("the PEM does not hold the DER")
	}
	pub, err := x509.ParsePKIXPublicKey(pk.DER)
	if _, ok := pub.(*ecdsa.PublicKey); err != nil || !ok || pk.JWK.Crv != "P-256" {
		t.Fatalf("%T %v", pub, err)
	}
	var page AuditPage
	_ = json.Unmarshal([]byte(serverAnswers["audit page"].body), &page)
	r := page.Records[0]
	if ts, err := r.Time(); err != nil || ts.Nanosecond() != 51003894 || r.Outcome != OutcomeSuccess || r.KeyVersion != 1 ||
		r.ClientFingerprint != "" || page.NextCursor != "1" {
		t.Fatalf("%+v %v", r, err)
	}
	var s Signed
	_ = json.Unmarshal([]byte(serverAnswers["signed"].body), &s)
	if len(s.Signature) != 71 || s.Signature[0] != 0x30 || s.Algorithm != SchemeECDSAP256SHA256 {
		t.Fatalf("%+v", s)
	}
}

func TestCustodyDecodes(t *testing.T) {
	// keyJSON is an answer from a server without custody: it reads as sealed.
	base := keyJSON[:len(keyJSON)-1]
	for body, want := range map[string]Custody{
		base + `,"custody":"pkcs11"}`:      CustodyPKCS11,
		base + `,"custody":"sealed"}`:      CustodySealed,
		base + `,"custody":"hsm-cluster"}`: Custody("hsm-cluster"), // a newer server's: kept as its string
		base + `,"custody":null}`:          CustodySealed,
		keyJSON:                            CustodySealed,
	} {
		// Decoding into a used KeyInfo must not keep its earlier custody.
		k := KeyInfo{Custody: "stale"}
		if err := json.Unmarshal([]byte(body), &k); err != nil || k.Custody != want || k.Algorithm != AlgorithmAES256GCM {
			t.Errorf("%s: custody %q, want %q (%v)", body, k.Custody, want, err)
		}
	}
	var page KeyPage
	if err := json.Unmarshal([]byte(`{"keys":[`+keyJSON+`,`+base+`,"custody":"pkcs11"}]}`), &page); err != nil ||
		page.Keys[0].Custody != CustodySealed || page.Keys[1].Custody != CustodyPKCS11 {
		t.Fatalf("%+v %v", page, err)
	}
	for req, want := range map[*CreateKeyRequest]string{
		{Algorithm: AlgorithmECP256}:                         `{"algorithm":"ec-p256"}`,
		{Algorithm: AlgorithmECP256, Custody: CustodyPKCS11}: `{"algorithm":"ec-p256","custody":"pkcs11"}`,
	} {
		if data, err := json.Marshal(req); err != nil || string(data) != want {
			t.Errorf("%s, want %s (%v)", data, want, err)
		}
	}
}

func TestSignAndVerifyRequestsDecodeStrictly(t *testing.T) {
	var s SignRequest
	if err := json.Unmarshal([]byte(`{"message":"","algorithm":"ed25519"}`), &s); err != nil || s.Message == nil || len(s.Message) != 0 || s.Digest != nil {
		t.Fatalf("%+v %v", s, err)
	}
	if err := json.Unmarshal([]byte(`{"mesage":"AA=="}`), &s); err == nil {
		t.Fatal("a misspelt field was accepted")
	}
	var v VerifyRequest
	if err := json.Unmarshal([]byte(`{"digest":"AQI=","signature":"CQ==","key_version":3}`), &v); err != nil ||
		v.Message != nil || len(v.Digest) != 2 || v.Signature[0] != 9 || v.KeyVersion != 3 {
		t.Fatalf("%+v %v", v, err)
	}
	data, _ := json.Marshal(v)
	if string(data) != `{"digest":"AQI=","signature":"CQ==","key_version":3}` {
		t.Fatalf("%s", data)
	}
}

func dropNulls(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			if e != nil {
				out[k] = dropNulls(e)
			}
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = dropNulls(e)
		}
		return out
	}
	return v
}
