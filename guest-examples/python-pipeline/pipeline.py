"""python-pipeline: calls another algorithm and publishes the result as an
event (a wasmgrid algorithm in Python using ``wasmgrid.algo``,
``wasmgrid.events`` and ``wasmgrid.keyvalue``).

Input (JSON)::

    {"name": "Ada", "hello": "demo/hello", "topic": "py-feed", "bucket": "demo/pycounters"}

Calls ``hello`` with ``name`` (``algo.call``), publishes a
``com.example.py.Greeted`` event with ``{"greeting": ...}`` to ``topic``
(``events.publish``; deploy with ``grant=topic:NAME``), counts the calls in
the keyvalue bucket ``bucket`` (optional; needs a ``:write`` grant) and
returns ``{"greeting", "event", "count"}``. A callee error keeps its kind.
"""

import wasmgrid
from wasmgrid import algo, events, keyvalue


def apply(input):
    if not isinstance(input, dict):
        raise wasmgrid.InvalidInput('send JSON {"name": ..., "hello": ..., "topic": ...}')
    for field in ("name", "hello", "topic"):
        if not isinstance(input.get(field), str):
            raise wasmgrid.InvalidInput(f"`{field}` must be a string")
    greeting = algo.call(input["hello"], input["name"])
    event = events.publish(input["topic"], "com.example.py.Greeted", {"greeting": greeting},
                           subject=f"/names/{input['name']}",
                           extensions={"pipeline": "python"})
    count = None
    if isinstance(input.get("bucket"), str):
        count = keyvalue.open(input["bucket"]).increment("greeted")
    return {"greeting": greeting, "event": event, "count": count}
