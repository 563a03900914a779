"""Certificates and private keys read from PEM files, with errors that name the file and line.

``certificates`` reads every ``CERTIFICATE`` block of a file (a chain or a CA bundle);
``private_key`` reads one key and, given the certificate it belongs to, checks that they pair.
Anything wrong is a ``SimnetError`` (``FILE:LINE: what``), never a traceback.
"""

from __future__ import annotations

import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from simnet.errors import Problem, SimnetError

_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)
_KEY_LABELS = ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")


MAX_PEM_BYTES = 16 * 1024 * 1024  # far above any CA bundle; /proc/kcore is a "file" too


def _read(path: Path, what: str) -> str:
    if path.exists() and not path.is_file():  # a directory, a device, a FIFO: never read it
        raise SimnetError(Problem(str(path), None, what, "not a regular file"))
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PEM_BYTES + 1)
        if len(data) > MAX_PEM_BYTES:
            raise SimnetError(Problem(str(path), None, what, (
                f"larger than {MAX_PEM_BYTES // (1024 * 1024)} MiB: not a PEM file")))
        return data.decode("ascii")
    except OSError as e:
        raise SimnetError(Problem(str(path), None, what, f"cannot read: {e.strerror or e}")) from None
    except UnicodeDecodeError:
        raise SimnetError(Problem(str(path), None, what, "not a PEM file (binary content)")) from None


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def certificates(path: Path, what: str) -> tuple[x509.Certificate, ...]:
    """Every certificate in a PEM file, in order; ``what`` names the option it came from."""
    text = _read(path, what)
    certs, problems = [], []
    for m in _BLOCK.finditer(text):
        if m.group(1) != "CERTIFICATE":
            continue
        try:
            certs.append(x509.load_pem_x509_certificate(m.group(0).encode()))
        except ValueError as e:
            problems.append(Problem(str(path), _line(text, m.start()), what,
                                    f"not a valid certificate: {e}"))
    if problems:
        raise SimnetError(problems)
    if not certs:
        raise SimnetError(Problem(str(path), None, what, "no PEM certificate in this file"))
    return tuple(certs)


def private_key(path: Path, what: str, cert: x509.Certificate | None = None,
                cert_path: Path | None = None) -> rsa.RSAPrivateKey:
    """The private key in a PEM file; with ``cert``, it must be that certificate's key."""
    text = _read(path, what)
    block = next((m for m in _BLOCK.finditer(text) if m.group(1) in _KEY_LABELS), None)
    if block is None:
        raise SimnetError(Problem(str(path), None, what, "no PEM private key in this file"))
    try:
        key = serialization.load_pem_private_key(block.group(0).encode(), password=None)
    except (ValueError, TypeError) as e:
        raise SimnetError(Problem(str(path), _line(text, block.start()), what,
                                  f"not a usable private key: {e}")) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SimnetError(Problem(str(path), _line(text, block.start()), what,
                                  "not an RSA key (the sidecar's ECDHE-RSA suites need one)"))
    if cert is not None and key.public_key().public_numbers() != _public_numbers(cert):
        raise SimnetError(Problem(str(path), _line(text, block.start()), what,
                                  f"this key does not match the certificate in {cert_path}"))
    return key


def _public_numbers(cert: x509.Certificate):
    public = cert.public_key()
    return public.public_numbers() if isinstance(public, rsa.RSAPublicKey) else None
