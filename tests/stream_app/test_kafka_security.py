"""librdkafka -X security options -> Faust broker_credentials (pure mapping, no broker)."""

from __future__ import annotations

import datetime
import re
import ssl
from pathlib import Path

import faust
import pytest
from click.testing import CliRunner

from mlwatcher.stream_app.cli import worker
from mlwatcher.stream_app.kafka_security import KafkaSecurityError, broker_credentials

try:
    import cryptography  # noqa: F401  (optional: only to make throwaway certificates)

    HAVE_CRYPTOGRAPHY = True
except ImportError:
    HAVE_CRYPTOGRAPHY = False
needs_cryptography = pytest.mark.skipif(not HAVE_CRYPTOGRAPHY, reason="cryptography not installed")


@pytest.fixture
def ca_file(tmp_path: Path) -> tuple[Path, str | None]:
    """A CA file and the common name it must show in the context (None: don't check)."""
    if HAVE_CRYPTOGRAPHY:
        return _self_signed(tmp_path)[0], "mlwatcher-test-ca"
    cafile = ssl.get_default_verify_paths().cafile
    if cafile is None:
        pytest.skip("neither cryptography nor a system CA file")
    return Path(cafile), None


def _self_signed(tmp_path: Path, key_password: bytes | None = None) -> tuple[Path, Path]:
    """A throwaway self-signed certificate and its key (optionally encrypted)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlwatcher-test-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    encryption = (
        serialization.BestAvailableEncryption(key_password)
        if key_password
        else serialization.NoEncryption()
    )
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    return cert_path, key_path


def _ca_subjects(context: ssl.SSLContext) -> list[str]:
    return [
        value
        for cert in context.get_ca_certs()
        for rdn in cert["subject"]
        for key, value in rdn
        if key == "commonName"
    ]


def test_no_options_and_plaintext_give_no_credentials() -> None:
    assert broker_credentials({}) is None
    assert broker_credentials({"security.protocol": "plaintext"}) is None


def test_sasl_plaintext_scram() -> None:
    creds = broker_credentials(
        {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "alice",
            "sasl.password": "s3cret",
        }
    )
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password) == ("alice", "s3cret")
    assert creds.mechanism.value == "SCRAM-SHA-512"
    assert creds.protocol.value == "SASL_PLAINTEXT"
    assert creds.ssl_context is None


def test_sasl_ssl_loads_the_ca_file(ca_file: tuple[Path, str | None]) -> None:
    cert, common_name = ca_file
    creds = broker_credentials(
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": "PLAIN",  # librdkafka's plural alias
            "sasl.username": "bob",
            "sasl.password": "pw",
            "ssl.ca.location": str(cert),
        }
    )
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_SSL"
    assert creds.mechanism.value == "PLAIN"
    assert creds.ssl_context is not None
    assert creds.ssl_context.get_ca_certs()
    if common_name is not None:
        assert common_name in _ca_subjects(creds.ssl_context)
    assert creds.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert creds.ssl_context.check_hostname


@needs_cryptography
def test_ssl_with_client_certificate_and_no_hostname_check(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path, key_password=b"keypw")
    creds = broker_credentials(
        {
            "security.protocol": "SSL",
            "ssl.ca.location": str(cert),
            "ssl.certificate.location": str(cert),
            "ssl.key.location": str(key),
            "ssl.key.password": "keypw",
            "ssl.endpoint.identification.algorithm": "none",
        }
    )
    assert isinstance(creds, faust.SSLCredentials)
    assert creds.protocol.value == "SSL"
    assert not creds.context.check_hostname
    assert creds.context.verify_mode == ssl.CERT_REQUIRED
    assert "mlwatcher-test-ca" in _ca_subjects(creds.context)


@needs_cryptography
def test_wrong_key_password_names_the_certificate_option(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path, key_password=b"right")
    with pytest.raises(KafkaSecurityError, match=r"ssl\.certificate\.location"):
        broker_credentials(
            {
                "security.protocol": "SSL",
                "ssl.certificate.location": str(cert),
                "ssl.key.location": str(key),
                "ssl.key.password": "wrong",
            }
        )


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"security.protocol": "SASL_SSL2"}, "security.protocol"),
        ({"client.id": "x"}, "client.id"),
        (
            {"security.protocol": "SSL", "enable.ssl.certificate.verification": "false"},
            "enable.ssl",
        ),
        (
            {"security.protocol": "SASL_PLAINTEXT", "sasl.username": "a", "sasl.password": "b"},
            "sasl.mechanism",
        ),
        (
            {"security.protocol": "SASL_SSL", "sasl.mechanism": "GSSAPI", "sasl.username": "a"},
            "sasl.mechanism",
        ),
        (
            {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "PLAIN",
                "sasl.username": "a",
            },
            "sasl.password",
        ),
        ({"sasl.username": "a"}, "sasl.username"),
        ({"security.protocol": "SASL_PLAINTEXT", "ssl.ca.location": "/x"}, "ssl.ca.location"),
        ({"security.protocol": "SSL", "ssl.ca.location": "/does/not/exist.pem"}, "ssl.ca.location"),
        ({"security.protocol": "SSL", "ssl.key.location": "/k.pem"}, "ssl.key.location"),
        (
            {"security.protocol": "SSL", "ssl.endpoint.identification.algorithm": "dns"},
            "ssl.endpoint.identification.algorithm",
        ),
    ],
)
def test_refused_options_are_named(options: dict[str, str], named: str) -> None:
    with pytest.raises(KafkaSecurityError, match=re.escape(named)):
        broker_credentials(options)


def test_worker_cli_refuses_an_unsupported_option_before_connecting() -> None:
    result = CliRunner().invoke(
        worker, ["-b", "127.0.0.1:1", "-X", "security.protocol=SSL", "-X", "ssl.cipher.suites=X"]
    )
    assert result.exit_code == 2
    assert "ssl.cipher.suites" in result.output
