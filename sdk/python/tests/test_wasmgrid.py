"""Unit tests of the wasmgrid Python SDK, run on the host (no componentize-py needed):

    python3 -m unittest discover -s sdk/python/tests
"""

import os
import sys
import types
import unittest
from dataclasses import dataclass
from typing import Generic, List, Optional, Tuple, TypeVar

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import wasmgrid  # noqa: E402


def _raiser(exc):
    # One positional parameter: a second one would receive the trigger.
    def apply(_input):
        raise exc
    return apply


class DecodeInput(unittest.TestCase):
    def test_json(self):
        self.assertEqual(wasmgrid.decode_input("application/json", b'{"a": [1, 2.5]}'), {"a": [1, 2.5]})
        self.assertEqual(wasmgrid.decode_input(" Application/JSON; charset=utf-8", b'"x"'), "x")
        self.assertEqual(wasmgrid.decode_input("application/cloudevents+json", b"null"), None)

    def test_bad_json_is_invalid_input(self):
        with self.assertRaises(wasmgrid.InvalidInput) as cm:
            wasmgrid.decode_input("application/json", b"{")
        self.assertIn("not valid JSON", str(cm.exception))

    def test_text(self):
        self.assertEqual(wasmgrid.decode_input("text/plain", "héllo".encode()), "héllo")
        self.assertEqual(wasmgrid.decode_input("text/csv", b"a,b"), "a,b")
        with self.assertRaises(wasmgrid.InvalidInput):
            wasmgrid.decode_input("text/plain", b"\xff")

    def test_bytes(self):
        value = wasmgrid.decode_input("application/octet-stream", b"\x00\xff")
        self.assertEqual(value, b"\x00\xff")
        self.assertIsInstance(value, bytes)
        self.assertEqual(wasmgrid.decode_input("image/png", bytearray(b"x")), b"x")


class EncodeOutput(unittest.TestCase):
    def test_json_values(self):
        self.assertEqual(wasmgrid.encode_output({"a": 1, "b": "é"}), ("application/json", '{"a":1,"b":"é"}'.encode()))
        self.assertEqual(wasmgrid.encode_output([1, None, True]), ("application/json", b"[1,null,true]"))
        self.assertEqual(wasmgrid.encode_output((1, 2)), ("application/json", b"[1,2]"))
        self.assertEqual(wasmgrid.encode_output(3.5), ("application/json", b"3.5"))
        self.assertEqual(wasmgrid.encode_output(False), ("application/json", b"false"))
        self.assertEqual(wasmgrid.encode_output(None), ("application/json", b"null"))

    def test_text_and_bytes(self):
        self.assertEqual(wasmgrid.encode_output("hi"), ("text/plain", b"hi"))
        self.assertEqual(wasmgrid.encode_output(b"\x01"), ("application/octet-stream", b"\x01"))
        self.assertEqual(wasmgrid.encode_output(bytearray(b"\x02")), ("application/octet-stream", b"\x02"))
        self.assertEqual(wasmgrid.encode_output(memoryview(b"\x03")), ("application/octet-stream", b"\x03"))

    def test_explicit_output(self):
        self.assertEqual(wasmgrid.encode_output(wasmgrid.Output("a,b\n", "text/csv")), ("text/csv", b"a,b\n"))
        self.assertEqual(wasmgrid.encode_output(wasmgrid.Output(b"\x89PNG", "image/png")), ("image/png", b"\x89PNG"))
        self.assertEqual(wasmgrid.encode_output(wasmgrid.Output(b"x")), ("application/octet-stream", b"x"))
        with self.assertRaises(wasmgrid.Permanent):
            wasmgrid.encode_output(wasmgrid.Output(42, "text/plain"))

    def test_unserializable_is_permanent(self):
        for value in [float("nan"), {"x": float("inf")}, {"b": b"bytes"}, {1j: 1}, object()]:
            with self.subTest(value=value), self.assertRaises(wasmgrid.Permanent):
                wasmgrid.encode_output(value)


class Run(unittest.TestCase):
    def test_maps_input_and_output(self):
        self.assertEqual(wasmgrid.run(lambda s: s.upper(), "text/plain", b"abc"), ("text/plain", b"ABC"))
        self.assertEqual(wasmgrid.run(lambda v: {"n": len(v)}, "application/json", b"[1,2]"),
                         ("application/json", b'{"n":2}'))

    def test_typed_errors_propagate(self):
        for cls, kind in [(wasmgrid.InvalidInput, "invalid-input"), (wasmgrid.Permanent, "permanent"),
                          (wasmgrid.Transient, "transient"), (wasmgrid.Error, "permanent")]:
            with self.subTest(cls=cls), self.assertRaises(wasmgrid.Error) as cm:
                wasmgrid.run(_raiser(cls("why")), "text/plain", b"")
            self.assertEqual((cm.exception.kind, cm.exception.message), (kind, "why"))

    def test_other_exceptions_become_permanent(self):
        def apply(_input):
            return {}["missing"]
        stderr = sys.stderr
        sys.stderr = open(os.devnull, "w")
        try:
            with self.assertRaises(wasmgrid.Permanent) as cm:
                wasmgrid.run(apply, "text/plain", b"")
        finally:
            sys.stderr.close()
            sys.stderr = stderr
        self.assertEqual(cm.exception.message, "KeyError: 'missing'")

    def test_host_call_errors(self):
        @dataclass
        class DataError_StoreUnavailable:  # noqa: N801 - componentize-py's naming
            value: str

        @dataclass
        class DataError_NotFound:  # noqa: N801
            value: str

        @dataclass
        class Error_NoSuchStore:  # noqa: N801 - a case without payload
            pass

        cases = [(DataError_StoreUnavailable("busy"), wasmgrid.Transient, "store unavailable: busy"),
                 (DataError_NotFound("data://a/b/c"), wasmgrid.Permanent, "not found: data://a/b/c"),
                 (Error_NoSuchStore(), wasmgrid.Permanent, "no such store")]
        for case, cls, message in cases:
            with self.subTest(case=case), self.assertRaises(wasmgrid.Error) as cm:
                wasmgrid.run(_raiser(Err(case)), "text/plain", b"")
            self.assertIs(type(cm.exception), cls)
            self.assertEqual(cm.exception.message, message)
        self.assertIsNone(wasmgrid.host_error(ValueError("x")))

    def test_memory_error_and_base_exceptions_propagate(self):
        def oom(_input):
            raise MemoryError()
        with self.assertRaises(MemoryError):
            wasmgrid.run(oom, "text/plain", b"")

        def leave(_input):
            raise SystemExit(1)
        with self.assertRaises(SystemExit):
            wasmgrid.run(leave, "text/plain", b"")

    def test_trigger_argument_and_accessors(self):
        event = wasmgrid.Event(id="1", source="/s", type="t", extensions=[("traceparent", "00-x")])
        seen = {}

        def one(value):
            seen["one"] = (value, wasmgrid.trigger(), wasmgrid.content_type(), wasmgrid.raw_input())
            return None

        def two(value, trigger):
            seen["two"] = trigger
            return None

        def star(*args):
            seen["star"] = args
            return None

        wasmgrid.run(one, "text/plain", b"x", event)
        wasmgrid.run(two, "text/plain", b"x", event)
        wasmgrid.run(star, "text/plain", b"x", None)
        self.assertEqual(seen["one"], ("x", event, "text/plain", b"x"))
        self.assertIs(seen["two"], event)
        self.assertEqual(seen["star"], ("x", None))
        self.assertEqual(event.extension("traceparent"), "00-x")
        self.assertIsNone(event.extension("nope"))
        # Cleared after the call.
        self.assertIsNone(wasmgrid.trigger())
        self.assertEqual(wasmgrid.content_type(), "")

    def test_bad_input_never_reaches_apply(self):
        def apply(_input):
            raise AssertionError("called")
        with self.assertRaises(wasmgrid.InvalidInput):
            wasmgrid.run(apply, "application/json", b"nope")


# --- the component export, with stand-ins for the generated bindings -------------

T = TypeVar("T")


@dataclass(frozen=True)
class Err(Generic[T], Exception):
    value: T


def _fake_bindings():
    """Modules shaped like componentize-py's generated `componentize_py_types`
    and `wit_world.imports.types` (see `componentize-py bindings`)."""

    @dataclass
    class Payload:
        content_type: str
        body: bytes

    @dataclass
    class Error_InvalidInput:
        value: str

    @dataclass
    class Error_Permanent:
        value: str

    @dataclass
    class Error_Transient:
        value: str

    @dataclass
    class Event:
        id: str
        source: str
        type: str
        subject: Optional[str]
        time: Optional[str]
        data_content_type: Optional[str]
        extensions: List[Tuple[str, str]]

    cpt = types.ModuleType("componentize_py_types")
    cpt.Err = Err
    wit_types = types.ModuleType("wit_world.imports.types")
    for cls in (Payload, Error_InvalidInput, Error_Permanent, Error_Transient, Event):
        setattr(wit_types, cls.__name__, cls)
    world = types.ModuleType("wit_world")
    imports = types.ModuleType("wit_world.imports")
    imports.types = wit_types
    world.imports = imports
    return {"componentize_py_types": cpt, "wit_world": world, "wit_world.imports": imports,
            "wit_world.imports.types": wit_types}


class Handler(unittest.TestCase):
    def setUp(self):
        self.mods = _fake_bindings()
        self.saved = {k: sys.modules.get(k) for k in self.mods}
        sys.modules.update(self.mods)
        self.wit = self.mods["wit_world.imports.types"]

    def tearDown(self):
        for k, v in self.saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v

    def test_ok_and_trigger_conversion(self):
        def apply(value, trigger):
            return {"value": value, "id": trigger.id, "type": trigger.type, "subject": trigger.subject,
                    "tp": trigger.extension("traceparent")}

        handler = wasmgrid.algorithm(apply)()
        event = self.wit.Event("e1", "/src", "wasmgrid.test", "sub", None, "text/plain", [("traceparent", "00-1")])
        out = handler.apply(self.wit.Payload("text/plain", b"hi"), event)
        self.assertEqual(out.content_type, "application/json")
        self.assertEqual(out.body, b'{"value":"hi","id":"e1","type":"wasmgrid.test","subject":"sub","tp":"00-1"}')
        with self.assertRaises(Err) as cm, open(os.devnull, "w") as devnull:
            stderr, sys.stderr = sys.stderr, devnull
            try:
                handler.apply(self.wit.Payload("text/plain", b"x"), None)  # no trigger: None
            finally:
                sys.stderr = stderr
        self.assertEqual(cm.exception.value,
                         self.wit.Error_Permanent("AttributeError: 'NoneType' object has no attribute 'id'"))

    def test_errors_become_wit_cases(self):
        cases = [(wasmgrid.InvalidInput("i"), self.wit.Error_InvalidInput("i")),
                 (wasmgrid.Permanent("p"), self.wit.Error_Permanent("p")),
                 (wasmgrid.Transient("t"), self.wit.Error_Transient("t")),
                 (ValueError("v"), self.wit.Error_Permanent("ValueError: v"))]
        for raised, expected in cases:
            handler = wasmgrid.algorithm(_raiser(raised))()
            stderr = sys.stderr
            sys.stderr = open(os.devnull, "w")
            try:
                with self.subTest(raised=raised), self.assertRaises(Err) as cm:
                    handler.apply(self.wit.Payload("text/plain", b""), None)
            finally:
                sys.stderr.close()
                sys.stderr = stderr
            self.assertEqual(cm.exception.value, expected)


if __name__ == "__main__":
    unittest.main()
