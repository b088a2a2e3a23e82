// Validates webhook requests with the npm `pusher` server SDK (WebHook.isValid / getEvents), as an
// application receiving Herald's webhooks would. For Herald's end-to-end tests.
//
// Usage: node sdk_webhook.mjs < input.json
//   input: {"key", "secret", "headers": {...}, "body": "<raw body>"}  or an array of such objects
//   headers may use any case; the SDK wants them lower-cased, as Node's http module gives them.
// Prints, per input (an array when the input was one):
//   {"valid": true|false, "events": [...] | null, "time_ms": <number> | null, "error": "..."?}
import Pusher from 'pusher';

function check(input) {
  const headers = {};
  for (const [name, value] of Object.entries(input.headers ?? {})) {
    headers[name.toLowerCase()] = value;
  }
  const pusher = new Pusher({ appId: '1', key: input.key, secret: input.secret });
  const webhook = pusher.webhook({ headers, rawBody: input.body });
  const valid = webhook.isValid();
  if (!valid) {
    return { valid: false, events: null, time_ms: null };
  }
  try {
    return { valid: true, events: webhook.getEvents(), time_ms: webhook.getTime().getTime() };
  } catch (err) {
    return { valid: false, events: null, time_ms: null, error: String(err && err.message ? err.message : err) };
  }
}

let text = '';
process.stdin.setEncoding('utf8');
for await (const chunk of process.stdin) {
  text += chunk;
}
const input = JSON.parse(text);
const output = Array.isArray(input) ? input.map(check) : check(input);
process.stdout.write(JSON.stringify(output) + '\n');
