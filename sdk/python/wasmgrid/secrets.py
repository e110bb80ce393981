"""Per-algorithm secrets (the ``wasmgrid:algorithm/secrets`` import)::

    from wasmgrid import secrets

    token = secrets.get("token")   # str, or None if the secret is not set

Secrets are set by the algorithm's owner
(``PUT /v1/algorithms/{owner}/{name}/secrets/{key}``). The bindings are imported
on first use, so this module imports on plain CPython.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["get"]


def get(name: str) -> Optional[str]:
    """The value of this algorithm's secret ``name``, or ``None`` if not set."""
    from wit_world.imports import secrets as host  # only inside the component

    return host.get(name)
