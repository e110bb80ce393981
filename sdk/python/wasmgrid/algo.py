"""Calling other algorithms (the ``wasmgrid:algorithm/algo`` import)::

    from wasmgrid import algo

    greeting = algo.call("demo/hello", "Ada")        # "Hello, Ada!"
    stats = algo.call("demo/json-stats", [1, 2, 3])  # a dict

``call`` encodes the input like ``data.put`` (``str`` -> text, ``bytes`` ->
octet-stream, anything else -> JSON) and decodes the output like an ``apply``
input (JSON -> value, ``text/*`` -> ``str``, else ``bytes``). The callee's
error keeps its kind: ``InvalidInput``, ``Permanent`` or ``Transient`` with the
callee's message; an unknown endpoint or a too-deep call chain is
``Permanent``, a callee timeout/crash/overload ``Transient``. An algorithm may
call algorithms of its own owner.

The bindings are imported on first use, so this module imports on plain CPython.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from . import InvalidInput, Permanent, decode_input
from .data import _call, encode

__all__ = ["call", "call_raw", "decode"]


def decode(endpoint: str, content_type: str, body: bytes) -> Any:
    """The value of a callee's output (undecodable output is ``Permanent``)."""
    try:
        return decode_input(content_type, body)
    except InvalidInput as e:
        raise Permanent(f"the output of {endpoint}: {e.message}") from None


def call_raw(endpoint: str, content_type: str, body: bytes) -> Tuple[str, bytes]:
    """Calls ``endpoint`` with exactly these bytes: ``(content_type, body)`` out."""
    from wit_world.imports import algo as host  # only inside the component
    from wit_world.imports import types as wit

    out = _call(host.call, endpoint, wit.Payload(content_type=content_type, body=bytes(body)))
    return out.content_type, bytes(out.body)


def call(endpoint: str, input: Any, content_type: Optional[str] = None) -> Any:  # noqa: A002
    """Calls ``endpoint`` (``owner/name``, ``owner/name/1.2``, ...) with ``input``
    and returns its decoded output."""
    ctype, body = encode(input, content_type)
    out_type, out_body = call_raw(endpoint, ctype, body)
    return decode(endpoint, out_type, out_body)
