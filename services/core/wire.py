"""The HTTP JSON of every service: the very messages its gRPC methods answer, in protobuf's
canonical JSON mapping, so names, shapes and defaults are the proto's on both transports.

What the mapping means for an HTTP client: field names as in the .proto (snake_case); `bytes`
(PNGs, raw pixels) as base64 strings; 64-bit integers (seeds) as decimal strings, which a
JavaScript client keeps exact beyond 2^53 (and which every seed field also accepts); an
`optional` or message field that is not set is left out (not null); repeated and plain scalar
fields are always present, with their zero value when empty.
"""

from __future__ import annotations

from typing import Annotated

from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import BeforeValidator, Field


def to_json(message: Message) -> dict:
    """The JSON object of a response message (the one conversion every HTTP route uses)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def _seed_text(value):
    # a seed as the responses write it ("123"); anything else is left to the strict int check
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else value


# A request's seed: an integer, or the decimal string a response gave (uint64 in the proto).
Seed = Annotated[int, BeforeValidator(_seed_text), Field(ge=0, lt=2**63, strict=True)]
