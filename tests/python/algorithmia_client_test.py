#!/usr/bin/env python3
"""Wire-compatibility test: the official `algorithmia` Python client against wasmgrid.

Run (this is how the Rust integration test calls it):

    tests/.venv/bin/python tests/python/algorithmia_client_test.py --url URL --key KEY [--data]

The venv is created with:

    python3 -m venv tests/.venv && tests/.venv/bin/pip install -r tests/python/requirements.txt

The server must already have these algorithms deployed:
  * demo/hello       1.0.0  text in -> text "Hello, {input}!"
  * demo/json-stats  1.0.0  JSON array of numbers -> {"count","mean","min","max"};
                             an empty array fails with "need at least one number"

--data also runs the Data API checks (directories and files under --data-root).
Those need the Data API on the server.

Needs no test framework. Every check runs, each prints PASS/FAIL, and the last line is
"N passed, M failed". The exit status is 0 only if nothing failed: 1 means a check
failed, 2 means a setup or usage error.

What each check expects, and why, is in docs/algorithmia-compat.md.
"""

import argparse
import datetime
import functools
import os
import sys
import time
import traceback
import urllib.parse

DOC = "docs/algorithmia-compat.md"

# algorithmia 2.0.5 turns every non-2xx answer to POST /v1/algo/... into this exception
# and discards the response body (Client.postJsonHelper -> errors.raiseAlgoApiError).
GENERIC_FAILURE_PREFIX = "Non-Algorithm related Failure: <Response ["


# --------------------------------------------------------------------------- helpers


class Skip(Exception):
    """Raised by a check that cannot run because an earlier check it depends on failed."""


class Runner:
    def __init__(self, selectors, verbose):
        self.selectors = selectors
        self.verbose = verbose
        self.passed = 0
        self.failed = []
        self.skipped = 0

    def selected(self, name):
        return not self.selectors or any(s.lower() in name.lower() for s in self.selectors)

    def check(self, name, fn):
        """Runs one check and returns True if it passed, False if it failed or was skipped."""
        if not self.selected(name):
            return False
        try:
            fn()
        except Skip as e:
            self.skipped += 1
            print(f"SKIP  {name}: {e}")
            return False
        except AssertionError as e:
            self.failed.append(name)
            print(f"FAIL  {name}: {e}")
            if self.verbose:
                traceback.print_exc()
            return False
        except Exception as e:  # anything else is also a failure, with detail
            self.failed.append(name)
            print(f"FAIL  {name}: unexpected {type(e).__module__}.{type(e).__name__}: {e}")
            hint = hint_for(e)
            if hint:
                print(f"      hint: {hint}")
            # Print the innermost frames (where the client failed). Print everything with -v.
            traceback.print_exception(e, limit=None if self.verbose else -3, chain=self.verbose, file=sys.stdout)
            return False
        self.passed += 1
        print(f"PASS  {name}")
        return True

    def summary(self):
        line = f"{self.passed} passed, {len(self.failed)} failed"
        if self.skipped:
            line += f", {self.skipped} skipped"
        print()
        if self.failed:
            print("Failed checks:")
            for name in self.failed:
                print(f"  - {name}")
            print(f"(see {DOC} for what the client needs from the server)")
        print(line)
        return 0 if not self.failed else 1


def hint_for(e):
    """Names the server-side cause of known ways algorithmia 2.0.5 crashes on bad responses."""
    text = f"{type(e).__name__}: {e}"
    known = [
        ("KeyError: 'duration'", "metadata has no 'duration' (MUST A2)"),
        ("KeyError: 'content_type'", "metadata has no 'content_type' (MUST A2)"),
        ("KeyError: 'async'", "the output=void response needs {\"async\": \"void\", \"request_id\": ...} (MUST A5)"),
        ("KeyError: 'request_id'", "the output=void response needs {\"async\": \"void\", \"request_id\": ...} (MUST A5)"),
        ("JSONDecodeError", "the client expected a JSON body: a 2xx answer to /v1/algo, or any "
                            "answer to DELETE /v1/data (MUST A2 / D6)"),
        ("does not match format '%Y-%m-%dT%H:%M:%S.%fZ'", "last_modified in listings must look like "
                                                          "2024-01-02T03:04:05.123Z (MUST D3)"),
        ("Directory creation failed", "POST /v1/data/<parent> must answer exactly 200, not 201 (MUST D1)"),
        ("Non-Algorithm related Failure", "the server answered with a non-2xx status; see MUST A1 / D1 / D5"),
        ("ConnectionError", "is the server running and reachable at --url?"),
        ("ReadTimeout", "the server did not answer within --http-timeout"),
    ]
    for needle, hint in known:
        if needle in text:
            return hint
    return None


def eq(actual, expected, what):
    assert actual == expected, f"{what}: expected {expected!r}, got {actual!r}"


def expect_algorithm_exception(fn, contains, error_type=None):
    """Calls fn() and requires the client's AlgorithmException with `contains` in its message.

    Returns the exception so the caller can check more.
    """
    from Algorithmia.errors import AlgorithmException

    try:
        result = fn()
    except AlgorithmException as e:
        message = e.message if isinstance(e.message, str) else repr(e.message)
        assert contains.lower() in message.lower(), (
            f"AlgorithmException message {message!r} does not contain {contains!r} "
            f"(error_type={e.error_type!r})"
        )
        if error_type is not None:
            eq(e.error_type, error_type, "AlgorithmException.error_type")
        return e
    except Exception as e:
        text = str(e)
        if text.startswith(GENERIC_FAILURE_PREFIX):
            raise AssertionError(
                f"client raised a plain Exception({text!r}) instead of AlgorithmException. "
                "The server answered with a non-2xx status. algorithmia 2.0.5 throws away the body "
                "of any non-2xx answer to /v1/algo, so the client never sees the "
                "error message. The error must be sent as HTTP 200 with an "
                f'{{"error": {{"message": ..., "error_type": ...}}}} body ({DOC}, MUST A1).'
            ) from None
        raise AssertionError(
            f"expected AlgorithmException containing {contains!r}, "
            f"got {type(e).__module__}.{type(e).__name__}: {text}"
        ) from None
    raise AssertionError(f"expected AlgorithmException containing {contains!r}, call returned {result!r}")


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# --------------------------------------------------------------------------- environment


def prepare_environment(url):
    """Keeps the user's environment from interfering with a plain-HTTP test server.

    * requests reads HTTP(S)_PROXY/ALL_PROXY from the environment. Put the server host
      in NO_PROXY so the calls never go through a proxy.
    * Client.__init__ reads the file REQUESTS_CA_BUNDLE names (Client.catCerts) and
      fails with FileNotFoundError if that file is missing. Plain HTTP needs no CA
      bundle, so drop the variable in that case.
    """
    host = urllib.parse.urlsplit(url).hostname or "127.0.0.1"
    for var in ("NO_PROXY", "no_proxy"):
        entries = [e for e in os.environ.get(var, "").split(",") if e]
        for h in (host, "127.0.0.1", "localhost"):
            if h not in entries:
                entries.append(h)
        os.environ[var] = ",".join(entries)
    bundle = os.environ.get("REQUESTS_CA_BUNDLE")
    if bundle and not os.path.isfile(bundle):
        print(f"note: REQUESTS_CA_BUNDLE={bundle!r} does not exist; unsetting it for this test")
        del os.environ["REQUESTS_CA_BUNDLE"]


def make_client(url, key, http_timeout, verbose):
    import Algorithmia

    client = Algorithmia.client(key, url)
    session = client.requestSession

    # The client never gives requests a timeout, so a hung server would hang the test for
    # ever. Add one. This changes nothing on the wire.
    original_request = session.request

    @functools.wraps(original_request)
    def request_with_timeout(method, url, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = http_timeout
        return original_request(method, url, **kwargs)

    session.request = request_with_timeout

    if verbose:
        def log_response(response, *args, **kwargs):
            req = response.request
            print(
                f"      {req.method} {req.url} "
                f"[auth={req.headers.get('Authorization')!r} ct={req.headers.get('Content-Type')!r}] "
                f"-> {response.status_code} ct={response.headers.get('Content-Type')!r} "
                f"body={response.content[:200]!r}"
            )

        session.hooks["response"].append(log_response)
    return client


# --------------------------------------------------------------------------- algorithm checks


def algorithm_checks(runner, client):
    from Algorithmia.algorithm import OutputType
    from Algorithmia.async_response import AsyncResponse

    def hello_exact_version():
        r = client.algo("demo/hello/1.0.0").pipe("x")
        eq(r.result, "Hello, x!", "result")
        eq(r.metadata.content_type, "text", "metadata.content_type")
        assert is_number(r.metadata.duration), f"metadata.duration must be a number, got {r.metadata.duration!r}"
        assert r.metadata.duration >= 0, f"metadata.duration must be >= 0, got {r.metadata.duration!r}"

    def hello_latest():
        r = client.algo("demo/hello").pipe("x")
        eq(r.result, "Hello, x!", "result")
        eq(r.metadata.content_type, "text", "metadata.content_type")

    def hello_algo_uri():
        r = client.algo("algo://demo/hello/1.0.0").pipe("x")
        eq(r.result, "Hello, x!", "result")

    def hello_utf8():
        text = "Ada Lovelace \u00fc\u65e5\u672c \U0001F680"
        r = client.algo("demo/hello/1.0.0").pipe(text)
        eq(r.result, f"Hello, {text}!", "result")

    def hello_with_options():
        # Query string on the wire: ?timeout=60&stdout=True (Python bool, capital T).
        r = client.algo("demo/hello/1.0.0").set_options(timeout=60, stdout=True).pipe("x")
        eq(r.result, "Hello, x!", "result")
        eq(r.metadata.content_type, "text", "metadata.content_type")
        assert r.metadata.stdout is None or isinstance(r.metadata.stdout, str), (
            f"metadata.stdout must be absent or a string, got {r.metadata.stdout!r}"
        )

    def hello_raw_output():
        # ?timeout=300&stdout=False&output=raw. The client returns the body as text.
        r = client.algo("demo/hello/1.0.0").set_options(output=OutputType.raw).pipe("x")
        eq(r, "Hello, x!", "raw response text")

    def hello_void_output():
        # ?timeout=300&stdout=False&output=void. Needs {"async": ..., "request_id": ...}.
        r = client.algo("demo/hello/1.0.0").set_options(output=OutputType.void).pipe("x")
        assert isinstance(r, AsyncResponse), f"expected AsyncResponse, got {r!r}"
        assert isinstance(r.request_id, str) and r.request_id, f"request_id must be a non-empty string, got {r.request_id!r}"
        eq(r.async_protocol, "void", "AsyncResponse.async_protocol (the 'async' field)")

    def stats_partial_version():
        r = client.algo("demo/json-stats/1").pipe([1, 2, 3])
        eq(r.metadata.content_type, "json", "metadata.content_type")
        assert isinstance(r.result, dict), f"result must be a JSON object, got {r.result!r}"
        eq(r.result.get("count"), 3, "result['count']")
        eq(r.result.get("mean"), 2, "result['mean']")
        eq(r.result.get("min"), 1, "result['min']")
        eq(r.result.get("max"), 3, "result['max']")

    def stats_exact_version():
        r = client.algo("demo/json-stats/1.0.0").pipe([2.5, -1, 10])
        eq(r.result.get("count"), 3, "result['count']")
        eq(r.result.get("min"), -1, "result['min']")
        eq(r.result.get("max"), 10, "result['max']")

    def stats_empty_input_error():
        expect_algorithm_exception(
            lambda: client.algo("demo/json-stats/1.0.0").pipe([]),
            contains="need at least one number",
            error_type="AlgorithmError",
        )

    def missing_algorithm():
        # Only the algorithm's own failures come back as 200: a missing algorithm keeps
        # its 404 (the client then raises its generic exception naming the status).
        from Algorithmia.errors import AlgorithmException

        try:
            result = client.algo("demo/missing").pipe("x")
        except AlgorithmException as e:
            raise AssertionError(f"expected the real 404, got AlgorithmException({e.message!r})") from None
        except Exception as e:
            assert str(e).startswith(GENERIC_FAILURE_PREFIX + "404]"), f"expected a 404, got {e!r}"
        else:
            raise AssertionError(f"expected a 404, call returned {result!r}")

    runner.check("algo: demo/hello/1.0.0 pipe(str) -> text result + metadata", hello_exact_version)
    runner.check("algo: demo/hello (latest version)", hello_latest)
    runner.check("algo: algo://demo/hello/1.0.0 URI form", hello_algo_uri)
    runner.check("algo: UTF-8 text survives the round trip", hello_utf8)
    runner.check("algo: set_options(timeout=60, stdout=True)", hello_with_options)
    runner.check("algo: set_options(output=raw) returns plain text", hello_raw_output)
    runner.check("algo: set_options(output=void) returns AsyncResponse", hello_void_output)
    runner.check("algo: demo/json-stats/1 (partial version) pipe(list) -> JSON", stats_partial_version)
    runner.check("algo: demo/json-stats/1.0.0 with floats/negatives", stats_exact_version)
    runner.check("algo: empty list -> AlgorithmException 'need at least one number'", stats_empty_input_error)
    runner.check("algo: demo/missing -> the real 404", missing_algorithm)


# --------------------------------------------------------------------------- data API checks


def data_checks(runner, client, data_root):
    from Algorithmia.acl import AclType, ReadAcl
    from Algorithmia.errors import DataApiError

    dir_uri = f"{data_root.rstrip('/')}/pyclient-{os.getpid()}-{int(time.time())}"
    directory = client.dir(dir_uri)
    text = "hello w\u00f6rld \u2713"
    blob = bytes(range(256))
    doc = {"a": [1, 2, 3], "s": "\u00e9", "nested": {"ok": True, "none": None}}
    state = {"created": False, "written": set()}

    def need_dir():
        if not state["created"]:
            raise Skip("directory was not created")

    def need_file(name):
        need_dir()
        if name not in state["written"]:
            raise Skip(f"{name} was not written")

    def dir_absent_before_create():
        eq(directory.exists(), False, f"{dir_uri}.exists() before create")

    def dir_create_private():
        directory.create(ReadAcl.private)  # raises unless the server answers exactly 200
        state["created"] = True
        eq(directory.exists(), True, f"{dir_uri}.exists() after create")

    def dir_permissions():
        need_dir()
        acl = directory.get_permissions()
        assert acl is not None, "get_permissions() returned None: no 'acl' object in GET ?acl=true response"
        assert acl.read_acl is AclType.private, f"read ACL: expected private, got {acl.read_acl!r}"

    def put_string_get_string():
        need_dir()
        f = client.file(f"{dir_uri}/a.txt")
        returned = f.put(text)
        assert returned is f, f"put() should return the DataFile itself, got {returned!r}"
        state["written"].add("a.txt")
        eq(f.exists(), True, "a.txt exists() after put")
        eq(f.getString(), text, "a.txt getString()")

    def get_bytes_of_text():
        need_file("a.txt")
        eq(client.file(f"{dir_uri}/a.txt").getBytes(), text.encode("utf-8"), "a.txt getBytes()")

    def put_bytes_get_bytes():
        need_dir()
        f = client.file(f"{dir_uri}/b.bin")
        f.put(blob)
        state["written"].add("b.bin")
        eq(f.getBytes(), blob, "b.bin getBytes()")

    def put_json_get_json():
        need_dir()
        f = client.file(f"{dir_uri}/c.json")
        f.putJson(doc)
        state["written"].add("c.json")
        eq(f.getJson(), doc, "c.json getJson()")

    def dir_files_listing():
        need_dir()
        files = {f.getName(): f for f in directory.files()}
        eq(sorted(files), sorted(state["written"]), "names from dir.files()")
        expected_sizes = {"a.txt": len(text.encode("utf-8")), "b.bin": len(blob)}
        for name, size in expected_sizes.items():
            if name in files:
                eq(files[name].size, size, f"{name} size in listing")
        for name, f in files.items():
            assert isinstance(f.last_modified, datetime.datetime), (
                f"{name}.last_modified should be a datetime, got {f.last_modified!r}"
            )
        eq([d.path for d in directory.dirs()], [], "dir.dirs() of a directory with only files")

    def file_delete():
        need_file("a.txt")
        f = client.file(f"{dir_uri}/a.txt")
        eq(f.delete(), True, "a.txt delete()")
        state["written"].discard("a.txt")
        eq(f.exists(), False, "a.txt exists() after delete")
        try:
            value = f.getString()
        except DataApiError:
            pass
        else:
            raise AssertionError(f"getString() of a deleted file should raise DataApiError, returned {value!r}")

    def missing_file():
        need_dir()
        eq(client.file(f"{dir_uri}/does-not-exist.txt").exists(), False, "exists() of a missing file")

    def dir_delete_force():
        need_dir()
        eq(directory.delete(force=True), True, "dir.delete(force=True)")
        state["created"] = False
        eq(directory.exists(), False, f"{dir_uri}.exists() after delete")

    runner.check("data: dir.exists() is False before create", dir_absent_before_create)
    runner.check("data: dir.create(ReadAcl.private)", dir_create_private)
    runner.check("data: dir.get_permissions() is private", dir_permissions)
    runner.check("data: file.put(str) / exists() / getString()", put_string_get_string)
    runner.check("data: file.getBytes() of text", get_bytes_of_text)
    runner.check("data: file.put(bytes) / getBytes()", put_bytes_get_bytes)
    runner.check("data: file.putJson() / getJson()", put_json_get_json)
    runner.check("data: dir.files() lists names, sizes, last_modified", dir_files_listing)
    runner.check("data: file.delete() then exists() is False", file_delete)
    runner.check("data: exists() of a missing file is False", missing_file)
    runner.check("data: dir.delete(force=True)", dir_delete_force)

    if state["created"]:  # a check failed before the delete check: try to clean up anyway
        try:
            directory.delete(force=True)
        except Exception as e:
            print(f"note: could not clean up {dir_uri}: {type(e).__name__}: {e}")


# --------------------------------------------------------------------------- main


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="wasmgrid base URL, e.g. http://127.0.0.1:8080 (no /v1)")
    p.add_argument("--key", required=True, help="API key (the client sends it bare in the Authorization header)")
    p.add_argument("--data", action="store_true", help="also run the Data API checks")
    p.add_argument("--data-root", default="data://demo", help="parent collection for Data API checks (default: %(default)s)")
    p.add_argument("--http-timeout", type=float, default=120.0, help="per-request timeout in seconds (default: %(default)s)")
    p.add_argument("-k", dest="selectors", action="append", default=[], help="only run checks whose name contains this (repeatable)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every HTTP exchange")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not args.key:
        print("error: --key must not be empty", file=sys.stderr)
        return 2
    url = args.url.rstrip("/")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        print(f"error: --url must be an http(s) URL, got {args.url!r}", file=sys.stderr)
        return 2

    prepare_environment(url)
    try:
        import Algorithmia  # noqa: F401
    except ImportError as e:
        print(
            f"error: cannot import the algorithmia client ({e}). Install it with:\n"
            "  python3 -m venv tests/.venv && tests/.venv/bin/pip install -r tests/python/requirements.txt",
            file=sys.stderr,
        )
        return 2

    try:
        from importlib.metadata import version

        client_version = version("algorithmia")
    except Exception:
        client_version = "unknown"
    print(f"algorithmia client {client_version}, python {sys.version.split()[0]}, server {url}")

    client = make_client(url, args.key, args.http_timeout, args.verbose)
    runner = Runner(args.selectors, args.verbose)
    algorithm_checks(runner, client)
    if args.data:
        data_checks(runner, client, args.data_root)
    else:
        print("(Data API checks not run; pass --data to run them)")
    return runner.summary()


if __name__ == "__main__":
    sys.exit(main())
