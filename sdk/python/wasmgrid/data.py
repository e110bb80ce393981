"""Hosted data collections (the ``wasmgrid:algorithm/data`` import).

Thin wrappers over the bindings componentize-py generates
(``wit_world.imports.data``)::

    from wasmgrid import data

    text = data.get_text("data://.my/docs/in.txt")
    data.put("data://.my/docs/out.json", {"length": len(text)})
    for f in data.list("data://.my/docs/"):
        print(f.uri, f.size)

URIs are ``data://owner/collection/path`` (``.my`` is the algorithm's owner,
``data://.algo/temp/...`` its scratch space). A host error is raised as the
SDK's exception, as for an uncaught host-call error (``wasmgrid.host_error``):
``Transient("store unavailable: ...")`` for ``store-unavailable`` and
``Permanent("<case in words>: ...")`` otherwise (``"not found: ..."``,
``"access denied: ..."``, ``"invalid uri: ..."``, ``"too large: ..."``); the
WIT case is in the exception's ``case`` attribute (``"not-found"``, ...).
Uncaught, they fail the call with that error.

The bindings are imported on first use, so this module imports on plain CPython.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from . import JSON, OCTET_STREAM, TEXT, Permanent, host_error

__all__ = ["FileInfo", "PAGE_SIZE", "get", "get_text", "get_json", "put",
           "delete", "exists", "list", "encode"]

PAGE_SIZE = 1000
"""Files per host ``list`` call (the host's maximum)."""


@dataclass(frozen=True)
class FileInfo:
    """A file in a listing."""

    uri: str
    """The file's full URI, ``data://owner/collection/path``."""
    size: int
    """Size in bytes."""
    content_type: str
    """Media type given when the file was written."""
    last_modified: str
    """Last write time, RFC 3339 (UTC)."""
    etag: str
    """Entity tag of the content (changes whenever the content changes)."""


def _host():
    from wit_world.imports import data as host  # only inside the component
    return host


def _call(fn, *args):
    """Calls a binding; a host ``Err`` becomes ``Transient``/``Permanent``."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - only componentize-py's Err is converted
        err = host_error(e)
        if err is None:
            raise
        raise err from None


def encode(value: Any, content_type: Optional[str] = None):
    """``(content_type, body)`` that ``put`` writes for ``value``.

    ``bytes``/``bytearray``/``memoryview`` -> ``application/octet-stream``,
    ``str`` -> ``text/plain`` (UTF-8), anything else -> compact JSON
    (``application/json``; unserializable values and NaN raise ``Permanent``).
    An explicit ``content_type`` replaces the default media type, not the encoding.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        ctype, body = OCTET_STREAM, bytes(value)
    elif isinstance(value, str):
        ctype, body = TEXT, value.encode("utf-8")
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False,
                              separators=(",", ":"))
        except (TypeError, ValueError) as e:
            raise Permanent(f"cannot serialize the value as JSON: {e}") from None
        ctype, body = JSON, text.encode("utf-8")
    return (content_type if content_type is not None else ctype), body


def get(uri: str) -> bytes:
    """The bytes of the file at ``uri`` (``Permanent("not found: ...")`` if none)."""
    return bytes(_call(_host().get, uri).body)


def get_text(uri: str) -> str:
    """The file at ``uri`` decoded as UTF-8 (invalid UTF-8 is ``Permanent``)."""
    body = get(uri)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Permanent(f"{uri} is not valid UTF-8 text: {e}") from None


def get_json(uri: str) -> Any:
    """The file at ``uri`` parsed as JSON (invalid JSON is ``Permanent``)."""
    body = get(uri)
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise Permanent(f"{uri} is not valid JSON: {e}") from None


def put(uri: str, value: Any, content_type: Optional[str] = None) -> None:
    """Writes (creates or replaces) the file at ``uri``; see ``encode`` for
    how ``value`` is written. Needs a ``:write`` grant on the collection."""
    from wit_world.imports import types as wit  # only inside the component

    ctype, body = encode(value, content_type)
    _call(_host().put, uri, wit.Payload(content_type=ctype, body=body))


def delete(uri: str) -> bool:
    """Deletes the file at ``uri``; whether it existed."""
    return bool(_call(_host().delete, uri))


def exists(uri: str) -> bool:
    """Whether the file at ``uri`` exists (and the algorithm may read it)."""
    return bool(_call(_host().exists, uri))


def list(prefix: str) -> Iterator[FileInfo]:  # noqa: A001 - mirrors the WIT name
    """The files whose URI starts with ``prefix``, recursively, in path order.

    A generator: it asks the host for pages of ``PAGE_SIZE`` files as it goes
    (so an error may come from any ``next``).
    """
    host = _host()
    marker = None
    while True:
        page = _call(host.list, prefix, marker, PAGE_SIZE)
        for f in page.files:
            yield FileInfo(uri=f.uri, size=f.size, content_type=f.content_type,
                           last_modified=f.last_modified, etag=f.etag)
        marker = page.marker
        if marker is None:
            return

