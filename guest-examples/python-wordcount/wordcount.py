"""python-wordcount: counts the words of a text (a wasmgrid algorithm in Python).

Input: text (``text/plain``), a JSON string, or a JSON object
``{"text": "...", "top": N}`` (``top`` optional: keep only the N most frequent).
Output (``application/json``)::

    {"words": 3, "unique": 2, "counts": {"a": 2, "b": 1}}

``words`` is the number of words, ``unique`` the number of distinct words, and
``counts`` maps each word to its count, most frequent first (ties in
alphabetical order). A word is a run of letters and digits (any script), with
inner apostrophes kept (``don't``), case-folded (``The`` and ``the`` are one
word). Other input (binary, other JSON shapes) is an ``invalid-input`` error.
"""

import re
from collections import Counter

import wasmgrid

WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")


def apply(input):
    top = None
    if isinstance(input, dict):
        text = input.get("text")
        top = input.get("top")
        if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 0):
            raise wasmgrid.InvalidInput("`top` must be a non-negative integer")
    else:
        text = input
    if not isinstance(text, str):
        raise wasmgrid.InvalidInput(
            'send text (Content-Type: text/plain), a JSON string, or {"text": "...", "top": N}'
        )

    counts = Counter(WORD.findall(text.casefold()))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if top is not None:
        ranked = ranked[:top]
    return {"words": sum(counts.values()), "unique": len(counts), "counts": dict(ranked)}
