// fnhost example: a durable workflow in JavaScript (componentize-js / StarlingMonkey).
//
// The world imports fnhost:function/steps: an order is charged once, waits for its
// `order.shipped` event (key: the order id), settles for `settle_ms`, then asks for a review
// once. Each wait or sleep that is not due ends the attempt; fnhost runs the invocation again
// from the top when it is, and `get` answers the steps already recorded. Served as a
// background function (name it `…-background`, or `background = true` in fnhost.toml).
import { get, put, sleepUntil, waitForEvent } from 'fnhost:function/steps@0.5.0';

const DAY_MS = 86_400_000;
const text = new TextDecoder();
const bytes = new TextEncoder();

// Step `name`: its recorded result, else `work()` done now and recorded.
function step(name, work) {
  const recorded = get(name);
  if (recorded !== undefined) return text.decode(recorded);
  const result = work();
  put(name, bytes.encode(result)); // throws past max_steps / max_step_size
  return result;
}

function handle(request) {
  const query = new URL(request.url, 'http://localhost').searchParams;
  const order = query.get('order') ?? '?';
  const settleMs = Number(query.get('settle_ms') ?? 7 * DAY_MS);
  console.log(`workflow run ${order}`);
  const receipt = step('charge', () => {
    console.log(`charged ${order}`); // the side effect: once per invocation
    return `receipt-${order}`;
  });
  const shipped = waitForEvent('shipped', 'order.shipped', order, BigInt(14 * DAY_MS));
  if (shipped === undefined) {
    return json({ order, receipt, shipped: false });
  }
  const tracking = text.decode(shipped);
  sleepUntil('settle', BigInt(Date.now() + settleMs));
  step('review', () => {
    console.log(`review requested for ${order} (${tracking})`);
    return 'sent';
  });
  return json({ order, receipt, tracking, review: 'sent' });
}

addEventListener('fetch', (event) => event.respondWith(handle(event.request)));

function json(value) {
  return new Response(JSON.stringify(value), { headers: { 'content-type': 'application/json' } });
}
