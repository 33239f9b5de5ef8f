"""Envelope encryption: encrypt data locally under a fresh data key, and let FerroHSM wrap the
data key.

The data never goes to the server; only the 32-byte data key does, to be wrapped (RFC 5649)
by an ``aes-256-gcm`` key that never leaves the HSM. The envelope (wrapped key, nonce,
ciphertext) can be stored anywhere; opening it needs the server to unwrap the data key.

    export FERROHSM_SERVER=… FERROHSM_CA_CERT=… FERROHSM_TOKEN=…
    python examples/envelope.py [FILE] [--key envelope-kek]

Without FILE it seals a sample message. It prints the envelope as JSON, then opens it again
and checks that the data comes back.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import ferrohsm
from ferrohsm import Algorithm, Client, KeyInfo, Usage


def wrapping_key(client: Client, name: str) -> KeyInfo:
    """The key called ``name``, created as an ``aes-256-gcm`` wrap/unwrap key if needed."""
    try:
        return client.describe_key(name)
    except ferrohsm.NotFoundError:
        try:
            return client.create_key(
                Algorithm.AES_256_GCM,
                name=name,
                description="envelope encryption key-encryption key",
                usages=[Usage.WRAP, Usage.UNWRAP],
            )
        except ferrohsm.ConflictError:  # created meanwhile
            return client.describe_key(name)


def seal(client: Client, key: KeyInfo, data: bytes, context: bytes) -> dict[str, str]:
    """Encrypts ``data`` under a new data key and wraps the data key with ``key``."""
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(12)
    ciphertext = AESGCM(data_key).encrypt(nonce, data, context)
    wrapped = client.wrap(key.id, data_key)
    return {
        "key_id": wrapped.key_id,
        "wrapped_key": wrapped.wrapped,
        "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(ciphertext).decode(),
        "context": base64.b64encode(context).decode(),
    }


def open_envelope(client: Client, envelope: dict[str, str]) -> bytes:
    """Unwraps the data key and decrypts the data."""
    data_key = client.unwrap(envelope["key_id"], envelope["wrapped_key"]).key_material
    return AESGCM(data_key).decrypt(
        base64.b64decode(envelope["nonce"]),
        base64.b64decode(envelope["ciphertext"]),
        base64.b64decode(envelope["context"]),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("file", nargs="?", type=Path, help="the data to seal")
    parser.add_argument("--key", default="envelope-kek", help="the wrapping key's name")
    args = parser.parse_args(argv)
    data = args.file.read_bytes() if args.file else b"quarterly payroll, do not share"
    context = (args.file.name if args.file else "sample").encode()

    with Client.from_env() as client:
        key = wrapping_key(client, args.key)
        envelope = seal(client, key, data, context)
        print(json.dumps(envelope, indent=2))
        opened = open_envelope(client, envelope)

    if opened != data:
        print("the opened envelope differs from the data", file=sys.stderr)
        return 1
    print(f"sealed and opened {len(data)} bytes with {key.name or key.id}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
