"""Write wasmgrid algorithms in Python.

An algorithm is a WebAssembly component of the world
``wasmgrid:algorithm/algorithm@0.1.0`` (``wit/algorithm.wit``) that exports
``handler.apply``. With this module it is one plain function::

    import wasmgrid

    def apply(input):
        if not isinstance(input, str):
            raise wasmgrid.InvalidInput("send text (Content-Type: text/plain)")
        return {"length": len(input)}

The build script (``sdk/python/build.sh``) wraps the module's ``apply`` for
componentize-py; to call componentize-py yourself, add
``Handler = wasmgrid.algorithm(apply)`` to the module.

Input, by the input's content type:

* JSON (``application/json`` or ``*/*+json``) -> the decoded value
  (``dict``, ``list``, ``str``, ``int``, ``float``, ``bool`` or ``None``);
  invalid JSON is an ``invalid-input`` error before ``apply`` runs;
* ``text/*`` -> ``str`` (invalid UTF-8 is an ``invalid-input`` error);
* anything else -> ``bytes``.

Output, by the type of the return value:

* ``dict``, ``list``, ``tuple``, ``int``, ``float``, ``bool``, ``None`` ->
  ``application/json`` (compact; NaN and infinity are a ``permanent`` error);
* ``str`` -> ``text/plain``;
* ``bytes``, ``bytearray``, ``memoryview`` -> ``application/octet-stream``;
* ``Output(body, content_type)`` -> exactly those bytes and media type.

Errors: raise ``InvalidInput(msg)``, ``Permanent(msg)`` or ``Transient(msg)``
for the WIT error cases. Any other ``Exception`` becomes ``permanent`` with the
message ``"<ExceptionType>: <text>"`` (its traceback goes to stderr).
An uncaught error of a host call (``componentize_py_types.Err``, e.g. from
``wit_world.imports.data.get``) becomes ``transient`` for ``store-unavailable``
and ``permanent`` otherwise, with the message ``"<case in words>: <text>"``.
``MemoryError`` and non-``Exception`` exceptions are not caught: the call
traps and the host reports it (``OutOfMemoryError`` / ``CrashError``).

The event that triggered the call (``None`` for direct HTTP/CLI calls and for
batched deliveries) is passed as a second argument if ``apply`` takes one
(``def apply(input, trigger): ...``), and is also returned by ``trigger()``
during the call. ``content_type()`` gives the raw media type of the input, and
``raw_input()`` its undecoded bytes.

Host interfaces: ``wasmgrid.data`` (data collections: ``get``, ``get_text``,
``get_json``, ``put``, ``delete``, ``exists``, ``list``),
``wasmgrid.secrets`` (``get``), ``wasmgrid.algo`` (``call``, ``call_raw``),
``wasmgrid.events`` (``publish``) and ``wasmgrid.keyvalue`` (``open`` ->
``Bucket``) wrap the generated bindings.

One-time set-up: a module that defines ``init()`` is built for the world
``algorithm-with-init``; the host calls ``init`` once per instance before its
first call (per call by default, once per N calls with ``reuse=N``).
componentize-py runs module-level code at build time and snapshots it, so
build per-instance state (tables, models) in ``init``.

This module is pure Python: it imports the generated bindings (``wit_world``)
only inside the component, so it can be imported and unit-tested on the host.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple

__all__ = [
    "JSON",
    "TEXT",
    "OCTET_STREAM",
    "Error",
    "InvalidInput",
    "Permanent",
    "Transient",
    "Event",
    "Output",
    "algorithm",
    "content_type",
    "raw_input",
    "trigger",
    "essence",
    "is_json",
    "decode_input",
    "encode_output",
    "run",
    "host_error",
    "lifecycle",
    "run_init",
    "data",
    "secrets",
    "algo",
    "events",
    "keyvalue",
]

JSON = "application/json"
TEXT = "text/plain"
OCTET_STREAM = "application/octet-stream"


# --- errors -----------------------------------------------------------------


class Error(Exception):
    """A typed failure of an algorithm; raise one of the subclasses.

    ``kind`` is the WIT case (``"invalid-input"``, ``"permanent"`` or
    ``"transient"``); ``message`` goes to the caller.
    """

    kind = "permanent"

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = str(message)

    def __str__(self) -> str:
        return self.message


class InvalidInput(Error):
    """The input cannot be processed (wrong shape, missing field, bad value).

    HTTP callers get ``AlgorithmError`` (400); event deliveries are not retried.
    """

    kind = "invalid-input"


class Permanent(Error):
    """The algorithm failed and retrying the same input will not help.

    HTTP callers get ``AlgorithmError`` (400); never retried.
    """

    kind = "permanent"


class Transient(Error):
    """The failure may go away on a later attempt.

    HTTP callers get ``TransientAlgorithmError`` (503); event deliveries are
    retried on the subscription's schedule.
    """

    kind = "transient"


# --- types ------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """The CloudEvents 1.0 attributes of the event whose delivery caused a call.

    The event's data is the call's input.
    """

    id: str
    source: str
    type: str
    subject: Optional[str] = None
    time: Optional[str] = None
    data_content_type: Optional[str] = None
    extensions: List[Tuple[str, str]] = field(default_factory=list)

    def extension(self, name: str) -> Optional[str]:
        """The value of the first extension attribute called ``name``, if any."""
        for key, value in self.extensions:
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class Output:
    """An output with an explicit media type, e.g. ``Output(csv, "text/csv")``.

    ``body`` may be ``bytes`` or ``str`` (encoded as UTF-8).
    """

    body: Any
    content_type: str = OCTET_STREAM


# --- media types ------------------------------------------------------------


def essence(content_type: str) -> str:
    """The media type without parameters, trimmed, lower case."""
    return content_type.split(";", 1)[0].strip().lower()


def is_json(content_type: str) -> bool:
    """``application/json`` or a ``+json`` media type (parameters ignored)."""
    e = essence(content_type)
    return e == JSON or e.endswith("+json")


def _is_text(content_type: str) -> bool:
    return essence(content_type).startswith("text/")


# --- conversions ------------------------------------------------------------


def decode_input(content_type: str, body: bytes) -> Any:
    """The value ``apply`` receives for a payload; raises ``InvalidInput``."""
    if is_json(content_type):
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidInput(f"input is not valid JSON: {e}") from None
    if _is_text(content_type):
        try:
            return bytes(body).decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidInput(f"input is not valid UTF-8 text: {e}") from None
    return bytes(body)


def encode_output(value: Any) -> Tuple[str, bytes]:
    """``(content_type, body)`` for a return value; raises ``Permanent``."""
    if isinstance(value, Output):
        body = value.body
        if isinstance(body, str):
            body = body.encode("utf-8")
        elif isinstance(body, (bytes, bytearray, memoryview)):
            body = bytes(body)
        else:
            raise Permanent(
                f"Output.body must be bytes or str, not {type(body).__name__}"
            )
        return str(value.content_type), body
    if isinstance(value, str):
        return TEXT, value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return OCTET_STREAM, bytes(value)
    if value is None or isinstance(value, (dict, list, tuple, int, float, bool)):
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False,
                              separators=(",", ":"))
        except (TypeError, ValueError) as e:
            raise Permanent(f"cannot serialize the output as JSON: {e}") from None
        return JSON, text.encode("utf-8")
    raise Permanent(
        f"cannot return a {type(value).__name__}: return a dict, list, number, "
        "bool, None, str, bytes or wasmgrid.Output"
    )


# --- the current call -------------------------------------------------------

_current_trigger: Optional[Event] = None
_current_content_type: str = ""
_current_body: bytes = b""


def trigger() -> Optional[Event]:
    """The event whose delivery caused the current call, or ``None``."""
    return _current_trigger


def content_type() -> str:
    """The media type of the current call's input, as the host set it."""
    return _current_content_type


def raw_input() -> bytes:
    """The undecoded bytes of the current call's input."""
    return _current_body


def host_error(exc: BaseException) -> Optional[Error]:
    """The SDK error for an uncaught error of a host call, or ``None``.

    componentize-py raises ``componentize_py_types.Err(case)`` when an imported
    function (``wit_world.imports.data.get``, ...) returns a WIT ``err``; ``case``
    is a variant case such as ``DataError_StoreUnavailable("...")``. It becomes
    ``Transient("store unavailable: ...")`` for a ``store-unavailable`` case
    (retrying may help) and ``Permanent("<case in words>: <message>")`` for
    any other, e.g. ``Permanent("not found: ...")``. The error's ``case``
    attribute holds the WIT case name (``"not-found"``, ``"access-denied"``, ...).
    A wasmgrid ``error`` (from ``algo.call``, ``events.publish``) keeps its
    case and message: ``Error_InvalidInput(m)`` -> ``InvalidInput(m)``,
    ``Error_Permanent`` -> ``Permanent``, ``Error_Transient`` -> ``Transient``.
    """
    if type(exc).__name__ != "Err" or not hasattr(exc, "value"):
        return None
    case = exc.value
    # A wasmgrid ``error`` (``algo.call``, ``events.publish``) keeps its case.
    kind = _ERROR_CASES.get(type(case).__name__)
    if kind is not None:
        err = kind(str(getattr(case, "value", "")))
        err.case = err.kind
        return err
    name = type(case).__name__.rsplit("_", 1)[-1]  # DataError_NotFound -> NotFound
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).lower()
    detail = getattr(case, "value", None)
    message = f"{words}: {detail}" if detail is not None else words
    err = Transient(message) if words == "store unavailable" else Permanent(message)
    err.case = words.replace(" ", "-")
    return err


_ERROR_CASES = {
    "Error_InvalidInput": InvalidInput,
    "Error_Permanent": Permanent,
    "Error_Transient": Transient,
}


def _wants_trigger(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` accepts a second positional argument."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = 0
    for p in params:
        if p.kind == p.VAR_POSITIONAL:
            return True
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional += 1
    return positional >= 2


def run(
    apply: Callable[..., Any],
    content_type: str,
    body: bytes,
    event: Optional[Event] = None,
) -> Tuple[str, bytes]:
    """Runs ``apply`` on one payload: ``(content_type, body)`` of the output.

    Raises ``InvalidInput``, ``Permanent`` or ``Transient``; any other
    ``Exception`` of ``apply`` becomes ``Permanent("<Type>: <text>")``.
    ``MemoryError`` and ``BaseException`` propagate. This is what the component
    export calls; it is public for unit tests of algorithms.
    """
    global _current_trigger, _current_content_type, _current_body
    _current_trigger, _current_content_type, _current_body = event, content_type, bytes(body)
    try:
        value = decode_input(content_type, body)
        result = _mapped(
            lambda: apply(value, event) if _wants_trigger(apply) else apply(value)
        )
        return encode_output(result)
    finally:
        _current_trigger, _current_content_type, _current_body = None, "", b""


# --- the component export -----------------------------------------------------


def _raise_wit(e: Error):
    from componentize_py_types import Err  # only inside the component
    from wit_world.imports import types as wit

    case = {
        "invalid-input": wit.Error_InvalidInput,
        "transient": wit.Error_Transient,
    }.get(e.kind, wit.Error_Permanent)
    raise Err(case(e.message)) from None


def run_init(init: Callable[[], Any]) -> None:
    """Runs the module's ``init()`` with ``run``'s error mapping: raises
    ``InvalidInput``, ``Permanent`` or ``Transient``; any other ``Exception``
    becomes ``Permanent("<Type>: <text>")``. Public for unit tests."""
    _mapped(init)


def _mapped(call: Callable[[], Any]) -> Any:
    """Calls ``call`` with the SDK's error mapping: ``Error``s and
    ``MemoryError`` pass; a host call's uncaught error becomes its
    ``Transient``/``Permanent``; any other ``Exception`` becomes
    ``Permanent("<Type>: <text>")`` with its traceback on stderr."""
    try:
        return call()
    except Error:
        raise
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - the contract: anything else is permanent
        host = host_error(e)
        if host is not None:
            raise host from None
        traceback.print_exc(file=sys.stderr)
        raise Permanent(f"{type(e).__name__}: {e}") from None


def lifecycle(init: Callable[[], Any]) -> type:
    """The ``Lifecycle`` class componentize-py exports for world
    ``algorithm-with-init``: ``Lifecycle = wasmgrid.lifecycle(init)``
    (``sdk/python/build.sh`` generates that line when the module defines
    ``init``). The host calls it once per instance, before the first call."""

    class Lifecycle:
        def init(self):
            try:
                run_init(init)
            except Error as e:
                _raise_wit(e)

    Lifecycle.__qualname__ = Lifecycle.__name__ = "Lifecycle"
    return Lifecycle


def algorithm(apply: Callable[..., Any]) -> type:
    """The ``Handler`` class componentize-py exports for ``apply``.

    Use it once in the app module: ``Handler = wasmgrid.algorithm(apply)``.
    (``sdk/python/build.sh`` generates that line for you.)
    """

    class Handler:
        def apply(self, input, trigger):  # noqa: A002 - WIT parameter names
            from wit_world.imports import types as wit  # only inside the component

            event = None
            if trigger is not None:
                event = Event(
                    id=trigger.id,
                    source=trigger.source,
                    type=trigger.type,
                    subject=trigger.subject,
                    time=trigger.time,
                    data_content_type=trigger.data_content_type,
                    extensions=[(k, v) for k, v in trigger.extensions],
                )
            try:
                ctype, body = run(apply, input.content_type, input.body, event)
            except Error as e:
                _raise_wit(e)
            return wit.Payload(content_type=ctype, body=body)

    Handler.__qualname__ = Handler.__name__ = "Handler"
    Handler.__doc__ = f"wasmgrid handler for {getattr(apply, '__name__', apply)!r}"
    return Handler


# The host-interface wrappers (they import the bindings only when called).
from . import algo, data, events, keyvalue, secrets  # noqa: E402
