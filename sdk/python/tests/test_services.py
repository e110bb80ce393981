"""Unit tests of wasmgrid.algo, wasmgrid.events, wasmgrid.keyvalue and `init`
against in-memory stand-ins for the generated bindings:

    python3 -m unittest discover -s sdk/python/tests
"""

import os
import sys
import types
import unittest
from dataclasses import dataclass
from typing import List, Optional, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import wasmgrid  # noqa: E402
from wasmgrid import algo, events, keyvalue  # noqa: E402


class Err(Exception):
    """Like componentize_py_types.Err: the WIT error case in `value`."""

    def __init__(self, value):
        super().__init__(value)
        self.value = value


def _case(name, field=True):
    ann = {"value": str} if field else {}
    return dataclass(type(name, (), {"__annotations__": ann}))


Error_InvalidInput = _case("Error_InvalidInput")
Error_Permanent = _case("Error_Permanent")
Error_Transient = _case("Error_Transient")
Error_NoSuchStore = _case("Error_NoSuchStore", field=False)
Error_AccessDenied = _case("Error_AccessDenied", field=False)
Error_Other = _case("Error_Other")


@dataclass
class Payload:
    content_type: str
    body: bytes


@dataclass
class OutgoingEvent:
    type: str
    subject: Optional[str]
    id: Optional[str]
    source: Optional[str]
    extensions: List[Tuple[str, str]]


@dataclass
class KeyResponse:
    keys: List[str]
    cursor: Optional[int]


class FakeBucket:
    def __init__(self):
        self.values = {}

    def get(self, key):
        return self.values.get(key)

    def set(self, key, value):
        self.values[key] = value

    def delete(self, key):
        self.values.pop(key, None)

    def exists(self, key):
        return key in self.values

    def list_keys(self, cursor):
        keys = sorted(self.values)
        start = cursor or 0
        page = keys[start:start + 2]
        return KeyResponse(page, start + 2 if start + 2 < len(keys) else None)


class Services(unittest.TestCase):
    def setUp(self):
        self.calls, self.published = [], []
        self.bucket = FakeBucket()

        def call(endpoint, payload):
            self.calls.append((endpoint, payload))
            if endpoint == "demo/bad":
                raise Err(Error_InvalidInput("hello expects a name"))
            if endpoint == "demo/busy":
                raise Err(Error_Transient("no free instance slot"))
            if endpoint == "demo/binary":
                return Payload("text/plain", b"\xff")
            return Payload("application/json", b'{"ok": true}')

        def publish(topic, event, data):
            if topic != "feed":
                raise Err(Error_Permanent("no grant for topic " + topic))
            self.published.append((topic, event, data))
            return "id-1"

        def open_(name):
            if name == "nosuch":
                raise Err(Error_NoSuchStore())
            if name == "private":
                raise Err(Error_AccessDenied())
            return self.bucket

        def increment(bucket, key, delta):
            v = int(bucket.values.get(key, b"0")) + delta
            bucket.values[key] = str(v).encode()
            return v

        m = {}
        for name in ("types", "algo", "events", "store", "atomics", "batch"):
            m[name] = types.ModuleType("wit_world.imports." + name)
        m["types"].Payload = Payload
        m["algo"].call = call
        m["events"].publish, m["events"].OutgoingEvent = publish, OutgoingEvent
        m["store"].open = open_
        m["atomics"].increment = increment
        m["batch"].get_many = lambda b, keys: [(k, b.values[k]) if k in b.values else None for k in keys]
        m["batch"].set_many = lambda b, kvs: b.values.update(dict(kvs))
        m["batch"].delete_many = lambda b, keys: [b.values.pop(k, None) for k in keys]
        imports = types.ModuleType("wit_world.imports")
        for k, v in m.items():
            setattr(imports, k, v)
        world = types.ModuleType("wit_world")
        world.imports = imports
        mods = {"wit_world": world, "wit_world.imports": imports}
        mods.update({"wit_world.imports." + k: v for k, v in m.items()})
        self.saved = {k: sys.modules.get(k) for k in mods}
        sys.modules.update(mods)

    def tearDown(self):
        for k, v in self.saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v

    def test_algo_call_encodes_and_decodes(self):
        self.assertEqual(algo.call("demo/x", {"a": 1}), {"ok": True})
        self.assertEqual(self.calls[-1], ("demo/x", Payload("application/json", b'{"a":1}')))
        algo.call("demo/x", "Ada")
        self.assertEqual(self.calls[-1][1], Payload("text/plain", b"Ada"))
        self.assertEqual(algo.call_raw("demo/x", "text/csv", b"a,b"), ("application/json", b'{"ok": true}'))

    def test_algo_call_errors_keep_their_kind(self):
        with self.assertRaises(wasmgrid.InvalidInput) as e:
            algo.call("demo/bad", "x")
        self.assertEqual(str(e.exception), "hello expects a name")
        with self.assertRaises(wasmgrid.Transient):
            algo.call("demo/busy", "x")
        with self.assertRaises(wasmgrid.Permanent) as e:
            algo.call("demo/binary", "x")
        self.assertIn("the output of demo/binary", str(e.exception))

    def test_uncaught_callee_error_fails_the_call_with_its_kind(self):
        with self.assertRaises(wasmgrid.Transient):
            wasmgrid.run(lambda _: algo.call("demo/busy", "x"), "text/plain", b"x")

    def test_events_publish(self):
        self.assertEqual(events.publish("feed", "com.example.T", {"n": 1}, subject="/s",
                                        extensions={"k": "v"}), "id-1")
        topic, event, data = self.published[-1]
        self.assertEqual(event, OutgoingEvent("com.example.T", "/s", None, None, [("k", "v")]))
        self.assertEqual(data, Payload("application/json", b'{"n":1}'))
        with self.assertRaises(wasmgrid.Permanent) as e:
            events.publish("other", "com.example.T", "x")
        self.assertIn("no grant", str(e.exception))
        with self.assertRaises(wasmgrid.Permanent):
            events.publish("feed", "", "x")
        self.assertEqual(events.extension_list([("a", 1)]), [("a", "1")])

    def test_keyvalue_bucket(self):
        b = keyvalue.open(".my/counters")
        self.assertIsNone(b.get("x"))
        b.set("x", "text")
        b.set("j", {"a": 1})
        self.assertEqual(b.get("x"), b"text")
        self.assertEqual(b.get_text("x"), "text")
        self.assertEqual(b.get_json("j"), {"a": 1})
        self.assertTrue(b.exists("x"))
        self.assertEqual(b.increment("n"), 1)
        self.assertEqual(b.increment("n", 41), 42)
        self.assertEqual(list(b.keys()), ["j", "n", "x"])  # two pages
        b.set_many({"p": b"1", "q": "2"})
        self.assertEqual(b.get_many(["p", "zz"]), [("p", b"1"), None])
        b.delete_many(["p", "q"])
        b.delete("x")
        self.assertFalse(b.exists("x"))

    def test_keyvalue_errors(self):
        with self.assertRaises(wasmgrid.Permanent) as e:
            keyvalue.open("nosuch")
        self.assertTrue(str(e.exception).startswith("keyvalue: no such store"))
        self.assertEqual(e.exception.case, "no-such-store")
        with self.assertRaises(wasmgrid.Permanent) as e:
            keyvalue.open("private")
        self.assertTrue(str(e.exception).startswith("keyvalue: access denied"))
        err = keyvalue.keyvalue_error(Err(Error_Other("disk full")))
        self.assertEqual(str(err), "keyvalue: disk full")


class Init(unittest.TestCase):
    def test_run_init_maps_errors(self):
        wasmgrid.run_init(lambda: None)
        with self.assertRaises(wasmgrid.Transient):
            wasmgrid.run_init(lambda: (_ for _ in ()).throw(wasmgrid.Transient("later")))

        def broken():
            raise KeyError("model")

        with self.assertRaises(wasmgrid.Permanent) as e:
            wasmgrid.run_init(broken)
        self.assertEqual(str(e.exception), "KeyError: 'model'")

    def test_lifecycle_class(self):
        state = []
        cls = wasmgrid.lifecycle(lambda: state.append(1))
        self.assertEqual(cls.__name__, "Lifecycle")
        cls().init()
        self.assertEqual(state, [1])


if __name__ == "__main__":
    unittest.main()
