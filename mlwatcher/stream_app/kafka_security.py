"""librdkafka security options (``-X key=value``) as Faust ``broker_credentials``.

The admin client and the sinks use librdkafka, which takes these options as they are. The
Faust worker's consumer and producer are aiokafka, which takes a credentials object and an
``ssl.SSLContext`` instead. This module translates the common options and refuses every
other one by name, so a setting never silently fails to reach the worker's connections.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

import faust
from faust.types.auth import CredentialsT

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SASL_OPTIONS = ("sasl.mechanism", "sasl.mechanisms", "sasl.username", "sasl.password")
SSL_OPTIONS = (
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
)
SUPPORTED_OPTIONS = ("security.protocol", *SASL_OPTIONS, *SSL_OPTIONS)
ENDPOINT_IDENTIFICATION = ("https", "none")


class KafkaSecurityError(ValueError):
    """A ``-X`` option the Faust worker cannot honour; the message names the option."""


def _choice(options: Mapping[str, str], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = options.get(key, default).strip()
    if value.upper() not in (a.upper() for a in allowed):
        raise KafkaSecurityError(
            f"kafka option {key}: expected one of {', '.join(allowed)}, got {value!r}"
        )
    return next(a for a in allowed if a.upper() == value.upper())


def _refuse_unsupported(options: Mapping[str, str]) -> None:
    for key in options:
        if key not in SUPPORTED_OPTIONS:
            raise KafkaSecurityError(
                f"kafka option {key}: not supported by the Faust worker (aiokafka); "
                f"supported: {', '.join(SUPPORTED_OPTIONS)}"
            )


def ssl_context(options: Mapping[str, str]) -> ssl.SSLContext:
    """A client-side context: server certificate verified against ``ssl.ca.location``
    (system CAs when absent), optional client certificate for mutual TLS."""
    ca = options.get("ssl.ca.location") or None
    certificate = options.get("ssl.certificate.location") or None
    key = options.get("ssl.key.location") or None
    key_password = options.get("ssl.key.password") or None
    if key is not None and certificate is None:
        raise KafkaSecurityError(
            "kafka option ssl.key.location: needs ssl.certificate.location as well"
        )
    if key_password is not None and key is None and certificate is None:
        raise KafkaSecurityError(
            "kafka option ssl.key.password: needs ssl.certificate.location (and ssl.key.location)"
        )
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise KafkaSecurityError(
            f"kafka option ssl.ca.location: cannot load CA file {ca!r} ({exc})"
        ) from exc
    # librdkafka >= 2.0 verifies the broker host name by default ("https"); "none" turns it off
    # while the certificate chain is still verified.
    identification = _choice(
        options, "ssl.endpoint.identification.algorithm", ENDPOINT_IDENTIFICATION, "https"
    )
    context.check_hostname = identification == "https"
    if certificate is not None:
        try:
            context.load_cert_chain(certificate, keyfile=key, password=key_password)
        except (OSError, ssl.SSLError) as exc:
            raise KafkaSecurityError(
                f"kafka option ssl.certificate.location: cannot load {certificate!r}"
                f"{f' with key {key!r}' if key else ''} ({exc})"
            ) from exc
    return context


def broker_credentials(options: Mapping[str, str]) -> CredentialsT | None:
    """Faust ``broker_credentials`` for librdkafka-style ``options`` (None = PLAINTEXT).

    Raises :class:`KafkaSecurityError` naming the option for anything unsupported,
    inconsistent (SSL files on a plaintext connection, SASL settings without SASL) or missing
    (SASL without mechanism, username or password).
    """
    _refuse_unsupported(options)
    protocol = _choice(options, "security.protocol", PROTOCOLS, "PLAINTEXT")
    uses_ssl = protocol in ("SSL", "SASL_SSL")
    uses_sasl = protocol.startswith("SASL_")
    for key in SSL_OPTIONS if not uses_ssl else ():
        if key in options:
            raise KafkaSecurityError(
                f"kafka option {key}: only used with security.protocol SSL or SASL_SSL, "
                f"got {protocol}"
            )
    for key in SASL_OPTIONS if not uses_sasl else ():
        if key in options:
            raise KafkaSecurityError(
                f"kafka option {key}: only used with security.protocol SASL_PLAINTEXT or "
                f"SASL_SSL, got {protocol}"
            )
    context = ssl_context(options) if uses_ssl else None
    if not uses_sasl:
        return None if context is None else faust.SSLCredentials(context)
    mechanism_key = "sasl.mechanisms" if "sasl.mechanisms" in options else "sasl.mechanism"
    if mechanism_key not in options:
        # librdkafka would default to GSSAPI (Kerberos), which the worker does not support.
        raise KafkaSecurityError(
            f"kafka option sasl.mechanism: required with {protocol}, "
            f"one of {', '.join(SASL_MECHANISMS)}"
        )
    mechanism = _choice(options, mechanism_key, SASL_MECHANISMS, "")
    for key in ("sasl.username", "sasl.password"):
        if not options.get(key):
            raise KafkaSecurityError(
                f"kafka option {key}: required with sasl.mechanism {mechanism}"
            )
    return faust.SASLCredentials(
        username=options["sasl.username"],
        password=options["sasl.password"],
        ssl_context=context,
        mechanism=mechanism,
    )
