"""A throw-away certificate authority and a server certificate for 127.0.0.1 / localhost.

The mgmt clients refuse to send a bearer token over plain http, so the test ARM server speaks
TLS. :func:`ensure_certs` writes ``ca.pem`` (the bundle clients trust), ``server.pem`` and
``server.key`` into a directory, or reuses them when a previous call already did. It uses the
``cryptography`` package (installed with azure-identity) and falls back to the ``openssl`` CLI.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CA_NAME = "armserver test CA"
HOSTS_DNS = ("localhost",)
HOSTS_IP = ("127.0.0.1", "::1")
VALID_DAYS = 7


@dataclass(frozen=True)
class CertPaths:
    """Where the PEM files are: clients trust ``ca_file``; the server loads cert + key."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def ensure_certs(cert_dir: str | os.PathLike[str]) -> CertPaths:
    """Create (once) the CA and the server certificate in ``cert_dir``; safe across processes."""
    root = Path(cert_dir)
    root.mkdir(parents=True, exist_ok=True)
    paths = CertPaths(root / "ca.pem", root / "server.pem", root / "server.key")
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all(p.is_file() and p.stat().st_size > 0 for p in _fields(paths)):
            return paths
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            staged = CertPaths(
                Path(tmp) / "ca.pem", Path(tmp) / "server.pem", Path(tmp) / "server.key"
            )
            try:
                import cryptography  # noqa: F401
            except ImportError:
                _generate_with_openssl(staged, Path(tmp))
            else:
                _generate_with_cryptography(staged)
            os.chmod(staged.key_file, 0o600)
            # key and cert first, the CA last: a reader that sees ca.pem sees a complete set
            for src, dst in (
                (staged.key_file, paths.key_file),
                (staged.cert_file, paths.cert_file),
                (staged.ca_file, paths.ca_file),
            ):
                os.replace(src, dst)
    return paths


def _fields(paths: CertPaths) -> tuple[Path, Path, Path]:
    return paths.ca_file, paths.cert_file, paths.key_file


def _generate_with_cryptography(out: CertPaths) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    not_before, not_after = now - dt.timedelta(hours=1), now + dt.timedelta(days=VALID_DAYS)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName(h) for h in HOSTS_DNS] + [
        x509.IPAddress(ipaddress.ip_address(h)) for h in HOSTS_IP
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    out.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    out.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _generate_with_openssl(out: CertPaths, work: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("armserver needs the 'cryptography' package or the 'openssl' CLI")
    ca_key = work / "ca.key"
    csr = work / "server.csr"
    ext = work / "server.ext"
    san = ",".join([f"DNS:{h}" for h in HOSTS_DNS] + [f"IP:{h}" for h in HOSTS_IP])
    ext.write_text(
        f"subjectAltName={san}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    days = ["-days", str(VALID_DAYS)]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True)

    run(
        "req",
        "-x509",
        *ec,
        "-keyout",
        str(ca_key),
        "-out",
        str(out.ca_file),
        *days,
        "-subj",
        f"/CN={CA_NAME}",
        "-addext",
        "basicConstraints=critical,CA:TRUE,pathlen:0",
        "-addext",
        "keyUsage=critical,digitalSignature,keyCertSign,cRLSign",
        "-addext",
        "subjectKeyIdentifier=hash",
    )
    run("req", *ec, "-keyout", str(out.key_file), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(out.ca_file),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(out.cert_file),
        *days,
        "-extfile",
        str(ext),
    )
