"""Certificates and keys for a deployment: a CA, the SuperLink's TLS certificate, and the
SuperNodes' authentication key pairs, all made with ``cryptography``.

The CA signs the SuperLink's certificate for the host names and IP addresses the clients dial;
every SuperNode (and the ``flwr`` CLI) trusts that CA alone (``ca.crt``). SuperNode keys are
ECDSA P-384 pairs in OpenSSH format: the private key for ``flower-supernode
--auth-supernode-private-key``, the public key for ``flwr supernode register``.
Private keys are written readable by their owner only, each as a fresh file that replaces
the target path (an existing file's permissions or a symlink there are not inherited).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from dataclasses import astuple, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 365


@dataclass(frozen=True)
class ServerCerts:
    """Where :func:`write_server_certs` put the files."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedcore"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    """DNS names and IP addresses; an entry that parses as an IP address is one."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not host or any(c.isspace() for c in host):
                raise ValueError(f"{host!r} is neither a host name nor an IP address") from None
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def make_ca(common_name: str = "fedcore CA") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA that may sign server certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP384R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, cert


def make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, hosts: list[str]
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A TLS server certificate for ``hosts`` (names and IPs), signed by the CA."""
    if not hosts:
        raise ValueError("a server certificate needs at least one host name or IP address")
    key = ec.generate_private_key(ec.SECP384R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA384())
    )
    return key, cert


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with permissions ``mode``, as a file of its own.

    The bytes go to a fresh file (``O_CREAT | O_EXCL``: never an existing file or a symlink)
    in the same directory, created with ``mode`` and set to it whatever the umask, which then
    replaces ``path`` atomically. So an existing world-readable key file does not lend the new
    key its permissions, and a symlink at ``path`` is replaced, its target left untouched.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_secret(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the owner only (created so, never world-readable)."""
    _write_file(path, data, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    """Write a certificate or public key, readable by all (``0o644``)."""
    _write_file(path, data, 0o644)


def _server_files(out: Path) -> ServerCerts:
    return ServerCerts(out / "ca.crt", out / "ca.key", out / "server.pem", out / "server.key")


def write_server_certs(out: Path, hosts: list[str]) -> ServerCerts:
    """A CA and a server certificate for ``hosts`` in ``out`` (created if needed)."""
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = make_ca()
    key, cert = make_server_cert(ca_key, ca_cert, hosts)
    files = _server_files(out)
    _write_public(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_secret(files.ca_key, _private_pem(ca_key))
    _write_public(files.server_cert, cert.public_bytes(serialization.Encoding.PEM))
    _write_secret(files.server_key, _private_pem(key))
    return files


def write_node_keys(out: Path, name: str) -> tuple[Path, Path]:
    """A SuperNode's authentication key pair in OpenSSH format, as Flower reads them:
    ``name`` (private) and ``name.pub`` (public, what ``flwr supernode register`` records)."""
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = out / name, out / f"{name}.pub"
    _write_secret(
        private,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    _write_public(
        public,
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + b"\n",
    )
    return private, public


def write_deployment_certs(
    out: Path, hosts: list[str], nodes: int, force: bool = False
) -> ServerCerts:
    """A CA, a server certificate for ``hosts`` and ``nodes`` SuperNode key pairs
    (``node-<i>``, ``node-<i>.pub``) in ``out``.

    A new CA silently stops every certificate the old one issued from working, so unless
    ``force``, :class:`FileExistsError` names the files ``out`` holds already, before any
    file is written."""
    paths = list(astuple(_server_files(out)))
    paths += [out / f"node-{i}{suffix}" for i in range(nodes) for suffix in ("", ".pub")]
    taken = [path.name for path in paths if os.path.lexists(path)]
    if taken and not force:
        shown = ", ".join(taken[:4]) + (", ..." if len(taken) > 4 else "")
        raise FileExistsError(
            f"{out} already holds {shown}: a new CA would stop every certificate the old one "
            "issued from working; give another --out, or --force to replace them"
        )
    files = write_server_certs(out, hosts)
    for i in range(nodes):
        write_node_keys(out, f"node-{i}")
    return files
