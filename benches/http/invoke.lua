-- wrk script for benches/http/compare.sh: wasmgrid's invoke API on `noop`
-- (POST, 5-byte text body, the admin key from $WASMGRID_KEY).
wrk.method = "POST"
wrk.body = "hello"
wrk.headers["Content-Type"] = "text/plain"
wrk.headers["Authorization"] = "Simple " .. os.getenv("WASMGRID_KEY")
