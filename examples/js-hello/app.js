// fnhost example: an HTTP function in JavaScript (componentize-js / StarlingMonkey).
//
// The target world exports wasi:http/incoming-handler, so componentize-js wires each
// incoming request to a standard `fetch` event.

const LANGUAGE = 'javascript';

addEventListener('fetch', (event) => {
  event.respondWith(handle(event.request));
  // fnhost's waitUntil (the web's FetchEvent.waitUntil, which StarlingMonkey implements): the
  // answer goes to the client first; the instance lives on until this promise settles, within
  // the function's time budget. `?later=URL` POSTs to URL after the answer (the URL's host
  // must be in allowed_outbound_hosts).
  const later = new URL(event.request.url, 'http://localhost').searchParams.get('later');
  if (later) {
    event.waitUntil(
      new Promise((resolve) => setTimeout(resolve, 300)).then(() =>
        fetch(later, { method: 'POST', body: 'after the answer' }),
      ),
    );
  }
});

// Netlify's `context`, from the headers fnhost sets (a client's own `fnhost-*` headers never
// reach a function). `Netlify.env.get(NAME)` is `process.env[NAME]`: the function's `env`.
function netlifyContext(request) {
  const h = (name) => request.headers.get(name);
  const cookies = Object.fromEntries(
    (h('cookie') ?? '').split(';').map((c) => c.trim().split('=')).filter(([k]) => k)
      .map(([k, ...v]) => [k, v.join('=').replace(/^"(.*)"$/, '$1')]),
  );
  return {
    ip: h('fnhost-client-ip'),
    requestId: h('fnhost-invocation-id'),
    params: Object.fromEntries(new URLSearchParams(h('fnhost-params') ?? '')),
    cookies,
    deploy: { id: h('fnhost-deploy-id') },
    site: { name: h('fnhost-site') },
    geo: { country: { code: h('fnhost-geo-country') }, city: h('fnhost-geo-city') },
    // Not Netlify's: the W3C trace this request belongs to (`traceparent`: version-trace-span-flags),
    // for log lines a collector can join to fnhost's spans.
    traceId: (h('traceparent') ?? '').split('-')[1] ?? null,
  };
}

async function handle(request) {
  // The URL the guest sees may be absolute or just a path: resolve against a base.
  const url = new URL(request.url, 'http://localhost');

  if (url.searchParams.has('spin')) {
    // Never returns: shows that the host's CPU budget stops a runaway function.
    for (;;) {}
  }

  if (url.searchParams.has('loop')) {
    // CPU-bound work, for the engine benchmark (epoch vs fuel): FNV-1a steps.
    let h = 0x811c9dc5;
    const n = Number(url.searchParams.get('loop'));
    for (let i = 0; i < n; i++) h = Math.imul(h ^ (i & 0xff), 0x01000193) >>> 0;
    return new Response(`${h}\n`, { headers: { 'content-type': 'text/plain; charset=utf-8' } });
  }

  if (url.searchParams.has('context')) {
    return Response.json(netlifyContext(request));
  }

  const name = url.searchParams.get('name') ?? 'world';

  if (request.method === 'POST') {
    const bytes = new Uint8Array(await request.arrayBuffer());
    const text = new TextDecoder().decode(bytes);
    const payload = { language: LANGUAGE, name, length: bytes.byteLength, body: text };
    return new Response(JSON.stringify(payload), {
      status: 200,
      headers: { 'content-type': 'application/json', 'x-language': LANGUAGE },
    });
  }

  return new Response(`Hello, ${name} from JavaScript!\n`, {
    status: 200,
    headers: { 'content-type': 'text/plain; charset=utf-8', 'x-language': LANGUAGE },
  });
}
