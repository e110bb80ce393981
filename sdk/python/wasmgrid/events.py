"""Publishing events to topics (the ``wasmgrid:algorithm/events`` import)::

    from wasmgrid import events

    event_id = events.publish("inference", "com.example.ai.InferenceCompleted",
                              {"confidence": 0.97}, subject="/models/resnet")

The data is encoded like ``data.put`` (``str`` -> text, ``bytes`` ->
octet-stream, anything else -> JSON). Returns the event's id once it is
durable. Needs a grant on the topic (deploy with ``grant=topic:NAME``);
without one, or for an unknown or ``system.*`` topic, ``Permanent``; an
invalid attribute or an event over 1 MiB is ``InvalidInput``; a store outage
``Transient``.

The bindings are imported on first use, so this module imports on plain CPython.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from . import Permanent
from .data import _call, encode

__all__ = ["publish", "extension_list"]


def extension_list(
    extensions: Union[None, Dict[str, str], Iterable[Tuple[str, str]]],
) -> List[Tuple[str, str]]:
    """Extension attributes as ``(name, value)`` string pairs."""
    if extensions is None:
        return []
    items = extensions.items() if isinstance(extensions, dict) else extensions
    return [(str(k), str(v)) for k, v in items]


def publish(
    topic: str,
    type: str,  # noqa: A002 - the CloudEvents attribute
    data: Any,
    *,
    subject: Optional[str] = None,
    id: Optional[str] = None,  # noqa: A002
    source: Optional[str] = None,
    extensions: Union[None, Dict[str, str], Iterable[Tuple[str, str]]] = None,
    content_type: Optional[str] = None,
) -> str:
    """Publishes one event of ``type`` with ``data`` to ``topic``; its id."""
    if not isinstance(type, str) or not type:
        raise Permanent("events.publish: the event needs a `type`")
    from wit_world.imports import events as host  # only inside the component
    from wit_world.imports import types as wit

    ctype, body = encode(data, content_type)
    event = host.OutgoingEvent(type=type, subject=subject, id=id, source=source,
                               extensions=extension_list(extensions))
    return _call(host.publish, topic, event, wit.Payload(content_type=ctype, body=body))
