"""Virtual key secrets: their shape, their checksum (refused without any lookup), their hash."""

from __future__ import annotations

import base64
import hashlib

from modelrouter.tenants.secrets import LENGTH, PREFIX, hash_secret, new_secret, well_formed


def test_a_new_secret_is_mr_then_32_random_bytes_and_a_checksum() -> None:
    secret = new_secret()
    assert secret.startswith(PREFIX)
    assert len(secret) == LENGTH
    body = secret[len(PREFIX) : len(PREFIX) + 43]
    assert len(base64.urlsafe_b64decode(body + "=")) == 32
    assert well_formed(secret)
    assert len({new_secret() for _ in range(200)}) == 200


def test_a_changed_character_fails_the_checksum() -> None:
    secret = new_secret()
    for at in (len(PREFIX), len(PREFIX) + 20, LENGTH - 1):
        changed = secret[:at] + ("A" if secret[at] != "A" else "B") + secret[at + 1 :]
        assert not well_formed(changed), at


def test_strings_out_of_shape_are_refused() -> None:
    secret = new_secret()
    refused = [
        "",
        "mr-",
        secret[:-1],
        secret + "A",
        "sk-" + secret[3:],
        secret[:10] + "+" + secret[11:],  # not url-safe base64
        secret[:10] + "é" + secret[11:],
        "client-key-0001",
    ]
    assert not any(well_formed(s) for s in refused)


def test_a_non_canonical_body_is_refused_even_with_a_matching_checksum() -> None:
    from modelrouter.tenants import secrets as module

    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    body = new_secret()[len(PREFIX) : len(PREFIX) + 43]
    # The last character carries 4 bits and 2 zero bits: setting one decodes to the same 32
    # bytes, so two texts would hash differently for one key.
    odd = body[:-1] + alphabet[alphabet.index(body[-1]) + 1]
    assert base64.urlsafe_b64decode(odd + "=") == base64.urlsafe_b64decode(body + "=")
    assert not well_formed(PREFIX + odd + module._checksum(odd))


def test_only_the_sha256_of_a_secret_is_kept() -> None:
    secret = new_secret()
    assert hash_secret(secret) == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in hash_secret(secret)


def test_the_configuration_knows_the_virtual_keys_prefix() -> None:
    from modelrouter.config.load import VIRTUAL_KEY_PREFIX

    assert VIRTUAL_KEY_PREFIX == PREFIX
