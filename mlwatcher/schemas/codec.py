"""Avro single-object encoding of MLWatcher messages.

Every message is ``C3 01`` + the 8-byte little-endian CRC-64-AVRO fingerprint of the writer
schema's canonical form + the Avro binary body (the Avro specification's "single object
encoding"). A reader therefore knows which schema wrote a message and refuses one it does not
know, instead of misreading its bytes.

Earlier versions of a schema live in ``previous/<name>.v<N>.avsc``; a message written with one
of them is read through Avro schema resolution into the current version (new fields take
their defaults), so records and batches written before an upgrade stay readable.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import fastavro
import fastavro.schema

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8


#: dead-letter reasons of a SchemaDecodeError (see mlwatcher.dead_letter)
UNDECODABLE = "undecodable"
UNKNOWN_SCHEMA = "unknown-schema"


class SchemaDecodeError(ValueError):
    """Raised for bytes that are not a message of a known MLWatcher schema.

    ``reason`` is ``"unknown-schema"`` for a well-framed message of another schema (or another
    version of it), ``"undecodable"`` for anything else.
    """

    def __init__(self, message: str, reason: str = UNDECODABLE) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class AvroSchema:
    name: str
    parsed: Any
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO of the parsing canonical form

    @property
    def header(self) -> bytes:
        return MAGIC + self.fingerprint


@cache
def load_schema(name: str) -> AvroSchema:
    """Load ``mlwatcher/schemas/<name>.avsc`` (e.g. ``prediction_batch``)."""
    return _parse(name, resources.files(__package__).joinpath(f"{name}.avsc").read_text())


def _parse(name: str, text: str) -> AvroSchema:
    parsed = fastavro.parse_schema(json.loads(text))
    canonical = fastavro.schema.to_parsing_canonical_form(parsed)
    fingerprint = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
    return AvroSchema(name=name, parsed=parsed, fingerprint=fingerprint)


@cache
def previous_versions(name: str) -> dict[bytes, AvroSchema]:
    """Earlier versions of schema ``name`` by fingerprint (``previous/<name>.v<N>.avsc``)."""
    folder = resources.files(__package__).joinpath("previous")
    versions = {}
    for entry in folder.iterdir():
        if entry.name.startswith(f"{name}.v") and entry.name.endswith(".avsc"):
            schema = _parse(entry.name.removesuffix(".avsc"), entry.read_text())
            versions[schema.fingerprint] = schema
    return versions


@cache  # asked for every message the worker decodes
def known_fingerprints(name: str) -> frozenset[bytes]:
    """Fingerprints of every version of schema ``name`` this reader can decode."""
    return frozenset({load_schema(name).fingerprint, *previous_versions(name)})


def encode(schema: AvroSchema, record: dict[str, Any]) -> bytes:
    """Encode ``record`` as one self-describing single-object message."""
    buffer = io.BytesIO()
    buffer.write(schema.header)
    fastavro.schemaless_writer(buffer, schema.parsed, record)
    return buffer.getvalue()


def decode(schema: AvroSchema, message: bytes) -> dict[str, Any]:
    """Decode a message written with ``schema``; SchemaDecodeError says why it cannot."""
    if len(message) < HEADER_SIZE or message[:2] != MAGIC:
        raise SchemaDecodeError(
            f"not an Avro single-object message: expected the {MAGIC.hex()} marker and an "
            f"8-byte schema fingerprint, got {len(message)} bytes starting {message[:10].hex()}"
        )
    fingerprint = message[2:HEADER_SIZE]
    writer = schema if fingerprint == schema.fingerprint else None
    if writer is None:
        writer = previous_versions(schema.name).get(fingerprint)
    if writer is None:
        raise SchemaDecodeError(
            f"unknown schema fingerprint {fingerprint.hex()}: this reader expects "
            f"{schema.name} with fingerprint {schema.fingerprint.hex()}",
            UNKNOWN_SCHEMA,
        )
    try:
        return fastavro.schemaless_reader(
            io.BytesIO(message[HEADER_SIZE:]),
            writer.parsed,
            None if writer is schema else schema.parsed,
            return_record_name=False,
        )
    except (EOFError, StopIteration, ValueError, IndexError, OverflowError, OSError) as exc:
        raise SchemaDecodeError(
            f"corrupt {schema.name} message ({len(message)} bytes): {type(exc).__name__}: {exc}"
        ) from exc
