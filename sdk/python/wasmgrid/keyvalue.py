"""``wasi:keyvalue`` over the data collections (``store``, ``atomics``, ``batch``)::

    from wasmgrid import keyvalue

    bucket = keyvalue.open(".my/counters")   # the collection as a bucket
    runs = bucket.increment("runs")          # atomics.increment
    bucket.set("last", "hello")              # str as UTF-8, bytes as is, else JSON
    bucket.get("last")                       # b"hello", or None
    list(bucket.keys())                      # every key, in order

Same grants and ACLs as ``wasmgrid.data``. Errors are ``Permanent`` as in the
Rust SDK: ``"keyvalue: no such store ..."``, ``"keyvalue: access denied ..."``,
``"keyvalue: <host message>"`` (the WIT case in the exception's ``case``).

The bindings are imported on first use, so this module imports on plain CPython.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from . import Permanent
from .data import encode

__all__ = ["Bucket", "open", "keyvalue_error"]


def keyvalue_error(exc: BaseException) -> Optional[Permanent]:
    """The SDK error for a ``wasi:keyvalue`` ``Err``, or ``None``."""
    if type(exc).__name__ != "Err" or not hasattr(exc, "value"):
        return None
    case = exc.value
    name = type(case).__name__
    if name.endswith("NoSuchStore"):
        err = Permanent('keyvalue: no such store (open a bucket as "owner/collection", e.g. ".my/counters")')
        err.case = "no-such-store"
    elif name.endswith("AccessDenied"):
        err = Permanent("keyvalue: access denied (no grant or ACL permission for this bucket)")
        err.case = "access-denied"
    else:
        err = Permanent(f"keyvalue: {getattr(case, 'value', name)}")
        err.case = "other"
    return err


def _kv(fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - only componentize-py's Err is converted
        err = keyvalue_error(e)
        if err is None:
            raise
        raise err from None


def _bytes(value: Any) -> bytes:
    return encode(value)[1]


class Bucket:
    """A collection opened as a ``wasi:keyvalue`` bucket."""

    def __init__(self, resource: Any, name: str) -> None:
        self.resource = resource
        self.name = name

    def get(self, key: str) -> Optional[bytes]:
        value = _kv(self.resource.get, key)
        return None if value is None else bytes(value)

    def get_text(self, key: str) -> Optional[str]:
        value = self.get(key)
        return None if value is None else value.decode("utf-8", "replace")

    def get_json(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            return None
        try:
            return json.loads(value)
        except ValueError as e:
            raise Permanent(f"keyvalue: {self.name}/{key} is not valid JSON: {e}") from None

    def set(self, key: str, value: Any) -> None:
        _kv(self.resource.set, key, _bytes(value))

    def delete(self, key: str) -> None:
        _kv(self.resource.delete, key)

    def exists(self, key: str) -> bool:
        return bool(_kv(self.resource.exists, key))

    def keys(self) -> Iterator[str]:
        cursor = None
        while True:
            page = _kv(self.resource.list_keys, cursor)
            yield from page.keys
            cursor = page.cursor
            if cursor is None:
                return

    def increment(self, key: str, delta: int = 1) -> int:
        from wit_world.imports import atomics  # only inside the component

        return int(_kv(atomics.increment, self.resource, key, delta))

    def get_many(self, keys: Iterable[str]) -> List[Optional[Tuple[str, bytes]]]:
        from wit_world.imports import batch

        got = _kv(batch.get_many, self.resource, [str(k) for k in keys])
        return [None if e is None else (e[0], bytes(e[1])) for e in got]

    def set_many(self, entries: Union[Dict[str, Any], Iterable[Tuple[str, Any]]]) -> None:
        from wit_world.imports import batch

        items = entries.items() if isinstance(entries, dict) else entries
        _kv(batch.set_many, self.resource, [(str(k), _bytes(v)) for k, v in items])

    def delete_many(self, keys: Iterable[str]) -> None:
        from wit_world.imports import batch

        _kv(batch.delete_many, self.resource, [str(k) for k in keys])


def open(name: str) -> Bucket:  # noqa: A001 - mirrors the WIT name
    """Opens the collection ``name`` (``"owner/collection"``, ``.my/...``)."""
    from wit_world.imports import store  # only inside the component

    return Bucket(_kv(store.open, name), name)
