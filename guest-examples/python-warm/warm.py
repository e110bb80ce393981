"""python-warm: a ~10 MB lookup table built once per instance by ``init``
(world ``algorithm-with-init``), then used by every call the instance serves.

Input: a JSON string key, e.g. ``"key-42"``. Output (JSON)::

    {"key": "key-42", "value": "value-42-...", "entries": 100000, "instance_calls": N}

``value`` is ``null`` for an unknown key. ``instance_calls`` counts the calls
this instance has served, this one included: 1 on a fresh instance, growing
when the version is deployed with ``reuse=N``.

componentize-py runs module-level code at build time and snapshots it into the
component, so the table is built in ``init`` (at run time, once per instance),
not at module level.
"""

import wasmgrid

ENTRIES = 100_000
_table = None
_calls = 0


def init():
    global _table
    # 100,000 entries of ~100 bytes of Python objects each: ~10 MB.
    _table = {f"key-{i}": f"value-{i}-{i * i:x}" for i in range(ENTRIES)}


def apply(input):
    global _calls
    if not isinstance(input, str):
        raise wasmgrid.InvalidInput('send a JSON string key, e.g. "key-42"')
    _calls += 1
    return {"key": input, "value": _table.get(input), "entries": len(_table),
            "instance_calls": _calls}
