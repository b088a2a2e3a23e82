// Calls Herald's HTTP API through the npm `pusher` server SDK, for Herald's end-to-end tests.
//
// Usage: node sdk_trigger.mjs '<json>'   with json = {"config": {...}, "calls": [{"op": ..., "args": [...]}]}
//   config: options for `new Pusher(config)`, e.g. {"appId", "key", "secret", "host", "port", "useTLS"}
//   ops:    trigger(channels, event, data, params?), triggerBatch(batch), get({path, params}),
//           post({path, body}), terminateUserConnections(userId), sendToUser(userId, event, data)
// Prints one JSON array on stdout, one entry per call, in order:
//   {"ok": true, "status": 200, "body": <parsed JSON response>}
//   {"ok": false, "status": 400, "body": "<response text>", "message": "..."}   SDK RequestError
//   {"ok": false, "thrown": "<message>"}                                         refused client-side
// Calls run one after another, so their effects are ordered.
import Pusher from 'pusher';

const OPS = new Set(['trigger', 'triggerBatch', 'get', 'post', 'terminateUserConnections', 'sendToUser']);

async function run(pusher, call) {
  if (!OPS.has(call.op)) {
    return { ok: false, thrown: `unknown op ${call.op}` };
  }
  let response;
  try {
    response = await pusher[call.op](...(call.args ?? []));
  } catch (err) {
    if (err && err.name === 'PusherRequestError') {
      return { ok: false, status: err.status ?? null, body: err.body ?? null, message: err.message };
    }
    return { ok: false, thrown: String(err && err.message ? err.message : err) };
  }
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    return { ok: false, status: response.status, body: text, message: 'response is not JSON' };
  }
  return { ok: true, status: response.status, body };
}

const input = JSON.parse(process.argv[2] ?? '{}');
const pusher = new Pusher({ useTLS: false, timeout: 10000, ...input.config });
const results = [];
for (const call of input.calls ?? []) {
  results.push(await run(pusher, call));
}
process.stdout.write(JSON.stringify(results) + '\n');
