// A wasi:http handler in JavaScript, written against the web's fetch-event
// API (as for a service worker): componentize-js, with its default features,
// turns the `fetch` listener into the component's wasi:http/incoming-handler
// export. No wasmgrid SDK is involved: this is a plain wasi:http/proxy
// component that `wasmtime serve` runs too.
addEventListener('fetch', (event) => event.respondWith(handle(event.request)));

async function handle(request) {
  const url = new URL(request.url);
  if (url.pathname === '/') {
    return new Response('Hello, world!', {
      headers: { 'content-type': 'text/plain' },
    });
  }
  // Anything else: say what arrived (method, path, query, body).
  const body = await request.text();
  return new Response(
    JSON.stringify({
      method: request.method,
      path: url.pathname,
      query: url.search,
      body,
    }),
    { headers: { 'content-type': 'application/json' } },
  );
}
