"""Certificates made in the test, with the `cryptography` package: a CA, a server certificate for
127.0.0.1 / localhost and a client certificate, all signed by that CA (PEM files in a directory)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 2


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA certificate: what clients and servers trust
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS)))


SERVER_NAMES = ("localhost", "127.0.0.1")


def make_certs(directory: Path, ca_name: str = "Herald test CA", server_names: tuple[str, ...] = SERVER_NAMES
               ) -> Certs:
    """A fresh CA and the server and client certificates it signs, written under `directory`; the
    server certificate is valid for `server_names` (host names and IP addresses)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (_builder(ca_name, _name(ca_name), ca_key)
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    paths = Certs(directory / "ca.crt", directory / "server.crt", directory / "server.key",
                  directory / "client.crt", directory / "client.key")
    paths.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for who, cert_path, key_path in (("server", paths.server_cert, paths.server_key),
                                     ("client", paths.client_cert, paths.client_key)):
        key = ec.generate_private_key(ec.SECP256R1())
        # Redis replicas and cluster nodes also connect to each other with the server certificate.
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if who == "server" \
            else [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (_builder(f"herald-test-{who}", ca_cert.subject, key)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
        if who == "server":
            builder = builder.add_extension(x509.SubjectAlternativeName([_san(n) for n in server_names]),
                                            critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
    return paths
