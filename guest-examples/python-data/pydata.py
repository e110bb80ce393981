"""python-data: counts the words of a file in a data collection and writes the
counts to another file (a wasmgrid algorithm in Python using ``wasmgrid.data``).

Input (JSON)::

    {"input": "data://owner/coll/file.txt", "output": "data://owner/coll/counts.json"}

Reads ``input`` as UTF-8 text, splits it on whitespace, writes
``{"words": N, "counts": {"word": n, ...}}`` (``application/json``) to
``output`` and returns ``{"output": "<output uri>", "words": N}``. Missing or
non-string fields are ``invalid-input``; data errors (not found, access denied,
...) fail the call as ``permanent`` (``transient`` if the store is unavailable).
"""

import wasmgrid
from wasmgrid import data


def apply(input):
    if not isinstance(input, dict):
        raise wasmgrid.InvalidInput('send JSON {"input": "data://...", "output": "data://..."}')
    for field in ("input", "output"):
        uri = input.get(field)
        if not isinstance(uri, str) or not uri.startswith("data://"):
            raise wasmgrid.InvalidInput(f"`{field}` must be a data:// URI string")

    counts = {}
    for word in data.get_text(input["input"]).split():
        counts[word] = counts.get(word, 0) + 1
    words = sum(counts.values())
    data.put(input["output"], {"words": words, "counts": counts})
    return {"output": input["output"], "words": words}
