"""Unit tests of wasmgrid.data and wasmgrid.secrets against an in-memory stand-in
for the generated bindings (no componentize-py needed):

    python3 -m unittest discover -s sdk/python/tests
"""

import os
import sys
import types
import unittest
from dataclasses import dataclass
from typing import List, Optional

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import wasmgrid  # noqa: E402
from wasmgrid import data, secrets  # noqa: E402


class Err(Exception):
    """Like componentize_py_types.Err: the WIT error case in `value`."""

    def __init__(self, value):
        super().__init__(value)
        self.value = value


def _case(name):
    return dataclass(type(name, (), {"__annotations__": {"value": str}}))


DataError_NotFound = _case("DataError_NotFound")
DataError_AccessDenied = _case("DataError_AccessDenied")
DataError_StoreUnavailable = _case("DataError_StoreUnavailable")


@dataclass
class Payload:
    content_type: str
    body: bytes


@dataclass
class FileInfo:
    uri: str
    size: int
    content_type: str
    last_modified: str
    etag: str


@dataclass
class FilePage:
    files: List[FileInfo]
    marker: Optional[str]


class FakeHost:
    """`wit_world.imports.data` over a dict; `fail` makes every call raise it."""

    def __init__(self):
        self.files = {}
        self.fail = None
        self.list_calls = []

    def _check(self):
        if self.fail is not None:
            raise Err(self.fail)

    def get(self, uri):
        self._check()
        if uri not in self.files:
            raise Err(DataError_NotFound(f"file {uri} not found"))
        return self.files[uri]

    def put(self, uri, content):
        self._check()
        self.files[uri] = content

    def delete(self, uri):
        self._check()
        return self.files.pop(uri, None) is not None

    def exists(self, uri):
        self._check()
        return uri in self.files

    def list(self, prefix, marker, limit):
        self._check()
        self.list_calls.append((prefix, marker, limit))
        names = sorted(u for u in self.files if u.startswith(prefix) and (marker is None or u > marker))
        page = names[:limit]
        files = [FileInfo(u, len(self.files[u].body), self.files[u].content_type, "t", "e") for u in page]
        return FilePage(files, page[-1] if len(names) > limit else None)


class DataTests(unittest.TestCase):
    def setUp(self):
        self.host = FakeHost()
        self.secret_values = {"token": "s3cr3t"}
        wit_types = types.ModuleType("wit_world.imports.types")
        wit_types.Payload = Payload
        wit_data = types.ModuleType("wit_world.imports.data")
        for name in ("get", "put", "delete", "exists", "list"):
            setattr(wit_data, name, getattr(self.host, name))
        wit_secrets = types.ModuleType("wit_world.imports.secrets")
        wit_secrets.get = self.secret_values.get
        imports = types.ModuleType("wit_world.imports")
        imports.types, imports.data, imports.secrets = wit_types, wit_data, wit_secrets
        world = types.ModuleType("wit_world")
        world.imports = imports
        mods = {"wit_world": world, "wit_world.imports": imports, "wit_world.imports.types": wit_types,
                "wit_world.imports.data": wit_data, "wit_world.imports.secrets": wit_secrets}
        self.saved = {k: sys.modules.get(k) for k in mods}
        sys.modules.update(mods)

    def tearDown(self):
        for k, v in self.saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v

    def test_put_encodes_by_type(self):
        data.put("data://o/c/b", b"\x00\x01")
        data.put("data://o/c/t", "héllo")
        data.put("data://o/c/j", {"a": [1, 2]})
        data.put("data://o/c/csv", "x,y\n", content_type="text/csv")
        f = self.host.files
        self.assertEqual(f["data://o/c/b"], Payload("application/octet-stream", b"\x00\x01"))
        self.assertEqual(f["data://o/c/t"], Payload("text/plain", "héllo".encode()))
        self.assertEqual(f["data://o/c/j"], Payload("application/json", b'{"a":[1,2]}'))
        self.assertEqual(f["data://o/c/csv"], Payload("text/csv", b"x,y\n"))
        with self.assertRaises(wasmgrid.Permanent):
            data.put("data://o/c/x", {"n": float("nan")})
        with self.assertRaises(wasmgrid.Permanent):
            data.put("data://o/c/x", {1, 2})

    def test_get_variants(self):
        data.put("data://o/c/j", {"k": "v"})
        self.assertEqual(data.get("data://o/c/j"), b'{"k":"v"}')
        self.assertEqual(data.get_text("data://o/c/j"), '{"k":"v"}')
        self.assertEqual(data.get_json("data://o/c/j"), {"k": "v"})
        data.put("data://o/c/bin", b"\xff")
        with self.assertRaisesRegex(wasmgrid.Permanent, "not valid UTF-8"):
            data.get_text("data://o/c/bin")
        with self.assertRaisesRegex(wasmgrid.Permanent, "not valid JSON"):
            data.get_json("data://o/c/bin")

    def test_exists_and_delete(self):
        self.assertFalse(data.exists("data://o/c/a"))
        data.put("data://o/c/a", "x")
        self.assertTrue(data.exists("data://o/c/a"))
        self.assertTrue(data.delete("data://o/c/a"))
        self.assertFalse(data.delete("data://o/c/a"))

    def test_host_errors(self):
        with self.assertRaises(wasmgrid.Permanent) as cm:
            data.get("data://o/c/none")
        self.assertEqual(str(cm.exception), "not found: file data://o/c/none not found")
        self.assertEqual(cm.exception.case, "not-found")
        self.host.fail = DataError_AccessDenied("no grant")
        with self.assertRaises(wasmgrid.Permanent) as cm:
            data.put("data://o/c/a", "x")
        self.assertEqual((str(cm.exception), cm.exception.case), ("access denied: no grant", "access-denied"))
        self.host.fail = DataError_StoreUnavailable("busy")
        for call in (lambda: data.exists("data://o/c/a"), lambda: next(data.list("data://o/c/"))):
            with self.subTest(call=call), self.assertRaises(wasmgrid.Transient) as cm:
                call()
            self.assertEqual(str(cm.exception), "store unavailable: busy")

    def test_uncaught_data_error_fails_the_call(self):
        def apply(_input):
            return data.get_text("data://o/c/none")
        with self.assertRaises(wasmgrid.Permanent) as cm:
            wasmgrid.run(apply, "text/plain", b"")
        self.assertTrue(str(cm.exception).startswith("not found: "))

    def test_list_pages_with_markers(self):
        uris = [f"data://o/c/f{i:04d}" for i in range(2001)]
        for u in uris:
            self.host.files[u] = Payload("text/plain", b"ab")
        self.host.files["data://o/other/x"] = Payload("text/plain", b"")
        listing = data.list("data://o/c/")
        self.assertEqual(self.host.list_calls, [])  # lazy: nothing asked yet
        got = [f for f in listing]
        self.assertEqual([f.uri for f in got], uris)
        self.assertEqual(got[0], data.FileInfo(uris[0], 2, "text/plain", "t", "e"))
        self.assertEqual(self.host.list_calls, [("data://o/c/", None, 1000),
                                                ("data://o/c/", uris[999], 1000),
                                                ("data://o/c/", uris[1999], 1000)])
        self.assertEqual(list(data.list("data://o/none/")), [])

    def test_secrets(self):
        self.assertEqual(secrets.get("token"), "s3cr3t")
        self.assertIsNone(secrets.get("missing"))


class Importable(unittest.TestCase):
    def test_no_bindings_needed_to_import(self):
        self.assertNotIn("wit_world", sys.modules)
        self.assertIs(wasmgrid.data, data)
        self.assertIs(wasmgrid.secrets, secrets)
        self.assertEqual(data.encode("x"), ("text/plain", b"x"))
        self.assertEqual(data.encode([1], "application/vnd.x+json"), ("application/vnd.x+json", b"[1]"))


if __name__ == "__main__":
    unittest.main()
