"""Sign a build artefact with a FerroHSM key and verify the signature locally.

Creates the ``ec-p256`` signing key on first use (or reuses it), sends the artefact's SHA-256
digest to the server to be signed (the artefact itself never leaves the machine), fetches the
public key of the version that signed and verifies the signature with ``cryptography``, as
anyone downloading the artefact would. Writes ``ARTEFACT.sig`` (DER ECDSA signature) and
``ARTEFACT.pub.pem`` next to the artefact.

    export FERROHSM_SERVER=… FERROHSM_CA_CERT=… FERROHSM_TOKEN=…
    python examples/ci_signing.py dist/app.tar.gz [--key ci-release-signing]

The token needs a role that may create keys (operator or admin) the first time, and sign
afterwards (a ``service`` token works once a tag policy grants it the key).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

import ferrohsm
from ferrohsm import Algorithm, Client, KeyInfo


def signing_key(client: Client, name: str) -> KeyInfo:
    """The key called ``name``, created as an ``ec-p256`` signing key if it does not exist."""
    try:
        key = client.describe_key(name)
    except ferrohsm.NotFoundError:
        try:
            key = client.create_key(
                Algorithm.EC_P256,
                name=name,
                description="CI release signing",
                tags={"purpose": "ci-signing"},
            )
        except ferrohsm.ConflictError:  # another pipeline created it meanwhile
            key = client.describe_key(name)
    if key.algorithm != Algorithm.EC_P256:
        raise SystemExit(f"key {name} is {key.algorithm.value}, not ec-p256")
    return key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("artefact", type=Path, help="the file to sign")
    parser.add_argument("--key", default="ci-release-signing", help="the signing key's name")
    args = parser.parse_args(argv)

    data = args.artefact.read_bytes()
    with Client.from_env() as client:
        key = signing_key(client, args.key)
        signed = client.sign(key.id, digest=hashlib.sha256(data).digest())
        public = client.public_key(key.id, version=signed.key_version)

    verifier = serialization.load_der_public_key(public.der)
    if not isinstance(verifier, ec.EllipticCurvePublicKey):
        raise SystemExit(f"key {key.id} did not return an EC public key")
    try:
        verifier.verify(signed.signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        print(f"signature of {args.artefact} does not verify", file=sys.stderr)
        return 1

    sig_path = args.artefact.with_name(args.artefact.name + ".sig")
    pem_path = args.artefact.with_name(args.artefact.name + ".pub.pem")
    sig_path.write_bytes(signed.signature)
    pem_path.write_text(public.pem)
    print(f"signed {args.artefact} with {key.name or key.id} v{signed.key_version} "
          f"({signed.algorithm.value}); verified locally")
    print(f"signature: {sig_path}\npublic key: {pem_path}")
    print(f"check with: openssl dgst -sha256 -verify {pem_path} -signature {sig_path} "
          f"{args.artefact}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
