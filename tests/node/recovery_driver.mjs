// Drives clients that use herald-channels-recovery, for Herald's history and recovery end-to-end tests.
//
// Same line protocol as driver.mjs (commands on stdin, one JSON report per line on stdout, a
// "result" per command). A client is pusher-js 8, pusher-js 7 or laravel-echo 2 (on pusher-js 8),
// each with the recovery helper around its pusher-js client.
//   ops: connect {client, build: "pusher8" | "pusher7" | "echo", key, port, options?}
//        follow {client, channel, event}   subscribe (the Echo way for "echo") and bind through the helper
//        state {client}, disconnect {client}, connect_again {client}
//   reports:
//     {"client", "type": "state", "previous", "current", "socket_id"}
//     {"client", "type": "subscribed", "channel"}                 pusher:subscription_succeeded
//     {"client", "type": "delivery", "channel", "event", "seq", "position"}   a callback bound through the helper
//     {"client", "type": "recovery", "channel", "recovered", "count", "reason", "cause", "position"}
//     {"client", "type": "warning", "message"}
// Every report has "t": milliseconds since the driver started.
import readline from 'node:readline';
import Echo from 'laravel-echo';
import Pusher8 from 'pusher-js';
import Pusher7 from 'pusher-js-7';
import { HeraldRecovery } from 'herald-channels-recovery';

const BUILDS = { pusher8: Pusher8, pusher7: Pusher7 };
const clients = new Map();

function emit(report) {
  process.stdout.write(JSON.stringify({ ...report, t: Math.round(performance.now()) }) + '\n');
}

Pusher8.logToConsole = false;
Pusher7.logToConsole = false;

function get(name) {
  const client = clients.get(name);
  if (!client) throw new Error(`no client ${name}`);
  return client;
}

const ops = {
  connect(cmd) {
    const { client: name, build, key, port } = cmd;
    if (clients.has(name)) throw new Error(`client ${name} already exists`);
    const options = {
      cluster: 'herald',
      wsHost: '127.0.0.1',
      wsPort: port,
      forceTLS: false,
      enabledTransports: ['ws'],
      disableStats: true,
      ...(cmd.options ?? {}),
    };
    let pusher;
    let echo = null;
    if (build === 'echo') {
      echo = new Echo({ broadcaster: 'pusher', Pusher: Pusher8, key, ...options });
      pusher = echo.connector.pusher;
    } else {
      const Pusher = BUILDS[build];
      if (!Pusher) throw new Error(`unknown build ${build}`);
      pusher = new Pusher(key, options);
    }
    const recovery = new HeraldRecovery(pusher, {
      warn: (message) => emit({ client: name, type: 'warning', message }),
    });
    clients.set(name, { pusher, echo, recovery, build });
    pusher.connection.bind('state_change', (states) => {
      emit({ client: name, type: 'state', previous: states.previous, current: states.current,
        socket_id: pusher.connection.socket_id ?? null });
    });
    return { supported: recovery.supported };
  },
  follow(cmd) {
    const { client: name, channel: channelName, event } = cmd;
    const { pusher, echo, recovery } = get(name);
    if (echo) echo.channel(channelName); // Echo subscribes; the helper follows
    const channel = echo ? recovery.channel(channelName) : recovery.subscribe(channelName);
    pusher.channel(channelName).bind('pusher:subscription_succeeded', () => {
      emit({ client: name, type: 'subscribed', channel: channelName });
    });
    channel.bind(event, (data, meta) => {
      emit({ client: name, type: 'delivery', channel: channelName, event, seq: data?.seq ?? null,
        position: meta.position ?? null });
    });
    channel.onRecovery((result) => {
      emit({ client: name, type: 'recovery', ...result, reason: result.reason ?? null });
    });
    return null;
  },
  state(cmd) {
    const { pusher, recovery } = get(cmd.client);
    return { state: pusher.connection.state, socket_id: pusher.connection.socket_id ?? null,
      supported: recovery.supported };
  },
  disconnect(cmd) {
    get(cmd.client).pusher.disconnect();
    return null;
  },
  connect_again(cmd) {
    get(cmd.client).pusher.connect();
    return null;
  },
};

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on('line', (line) => {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    emit({ type: 'result', id: null, ok: false, error: `bad command line: ${e.message}` });
    return;
  }
  try {
    const op = ops[cmd.op];
    if (!op) throw new Error(`unknown op ${cmd.op}`);
    const result = op(cmd);
    emit({ type: 'result', id: cmd.id, ok: true, result: result === undefined ? null : result });
  } catch (e) {
    emit({ type: 'result', id: cmd.id, ok: false, error: String(e && e.stack ? e.stack : e) });
  }
});
rl.on('close', () => {
  for (const { pusher } of clients.values()) {
    try {
      pusher.disconnect();
    } catch {
      // exiting anyway
    }
  }
  process.exit(0);
});
process.on('uncaughtException', (e) => {
  process.stderr.write(`[recovery driver] uncaught: ${e && e.stack ? e.stack : e}\n`);
  emit({ type: 'fatal', error: String(e && e.stack ? e.stack : e) });
});
emit({ type: 'ready' });
