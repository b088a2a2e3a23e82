// Drives real pusher-js clients for Herald's end-to-end tests.
//
// Protocol: one JSON command per line on stdin, one JSON report per line on stdout.
//   command: {"id": 1, "op": "connect", "client": "a", ...}
//   reply:   {"type": "result", "id": 1, "ok": true, "result": ...}
//            {"type": "result", "id": 1, "ok": false, "error": "..."}
//   reports about a client (asynchronous, in the order pusher-js produced them):
//     {"client": "a", "type": "state", "previous": "connecting", "current": "connected", "socket_id": "1.2"}
//     {"client": "a", "type": "message", "event": ..., "channel": ..., "data": ..., "user_id": ...}
//         every frame pusher-js decoded (after the handshake), including pusher_internal:* ones
//     {"client": "a", "type": "event", "channel": ..., "event": ..., "data": ..., "metadata": ...,
//      "members": {...}}  what app code bound with channel.bind(event, (data, metadata) => ...) sees; "members" is
//         a snapshot of channel.members taken in the handler, on presence channels only
//     {"client": "a", "type": "error", "error": ...}    pusher.connection.bind('error', ...)
//     {"client": "a", "type": "user_event", "event": ..., "data": ...}   pusher.user.bind_global
//     {"client": "a", "type": "watchlist", "event": ..., "data": ...}    pusher.user.watchlist.bind_global
// pusher-js debug logging goes to stderr. The process exits when stdin closes.
//
// connect may carry "origin": the Origin header of that app key's handshakes (see createWebSocket).
// Ops: connect, subscribe, unsubscribe, trigger, send_event, disconnect, reconnect, state, members,
// signin, close.
import readline from 'node:readline';
import Pusher from 'pusher-js';

const clients = new Map();

function emit(report) {
  // t: milliseconds since the driver started, for reading timelines in failure output.
  process.stdout.write(JSON.stringify({ ...report, t: Math.round(performance.now()) }) + '\n');
}

// A browser sends an Origin header with every WebSocket handshake; pusher-js under Node (faye-websocket)
// sends none. `connect` may name one (cmd.origin): sockets pusher-js opens for that app key then carry
// it, reconnects included. faye-websocket's client takes extra handshake headers as `headers`.
const origins = new Map();
const createWebSocket = Pusher.Runtime.createWebSocket;
Pusher.Runtime.createWebSocket = function (url) {
  const key = decodeURIComponent(new URL(url).pathname.split('/app/')[1] ?? '');
  const origin = origins.get(key);
  if (origin === undefined) return createWebSocket.call(this, url);
  const Socket = this.getWebSocketAPI();
  return new Socket(url, [], { headers: { Origin: origin } });
};

Pusher.logToConsole = false;
Pusher.log = (message) => {
  process.stderr.write(`[pusher-js ${new Date().toISOString()}] ${message}\n`);
};

// Errors pusher-js emits often wrap Error objects, which JSON.stringify renders as {}.
function plain(value, depth = 0) {
  if (value === null || value === undefined) return value ?? null;
  if (depth > 6) return String(value);
  if (value instanceof Error) {
    return { name: value.name, message: value.message, ...plain(Object.assign({}, value), depth + 1) };
  }
  if (Array.isArray(value)) return value.map((v) => plain(v, depth + 1));
  if (typeof value === 'object') {
    const out = {};
    for (const [k, v] of Object.entries(value)) {
      if (typeof v !== 'function') out[k] = plain(v, depth + 1);
    }
    return out;
  }
  return value;
}

function membersSnapshot(channel) {
  const m = channel.members;
  const list = [];
  m.each((member) => list.push({ id: member.id, info: member.info ?? null }));
  return { count: m.count, me: m.me ? { id: m.me.id, info: m.me.info ?? null } : null, list };
}

function watchChannel(name, channel, pusher) {
  if (channel.__heraldWatched) return;
  channel.__heraldWatched = true;
  // bind_global callbacks don't get the metadata (user_id on presence client events) that
  // channel.bind(event, (data, metadata) => ...) gets, so observe emit itself.
  const emitToBindings = channel.emit.bind(channel);
  channel.emit = (event, data, metadata) => {
    const report = {
      client: name,
      type: 'event',
      channel: channel.name,
      event,
      data: plain(data),
      metadata: plain(metadata ?? null),
    };
    if (channel.members) {
      report.members = membersSnapshot(channel);
      // pusher-js hands the Members object itself to pusher:subscription_succeeded.
      if (event === 'pusher:subscription_succeeded') report.data = report.members;
    }
    emit(report);
    return emitToBindings(event, data, metadata);
  };
}

function connect(cmd) {
  const { client: name, key, port } = cmd;
  if (clients.has(name)) throw new Error(`client ${name} already exists`);
  const host = cmd.host ?? '127.0.0.1';
  if (cmd.origin !== undefined && cmd.origin !== null) origins.set(key, cmd.origin);
  const options = {
    wsHost: host,
    wsPort: port,
    wssPort: port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'herald',
  };
  if (cmd.authPort) {
    const authBase = `http://127.0.0.1:${cmd.authPort}`;
    // The auth server looks up what to answer for this client by these params.
    const params = { client: name, key };
    options.channelAuthorization = { endpoint: `${authBase}/pusher/auth`, transport: 'ajax', params };
    options.userAuthentication = { endpoint: `${authBase}/pusher/user-auth`, transport: 'ajax', params };
  }
  Object.assign(options, cmd.options ?? {});
  const pusher = new Pusher(key, options);
  clients.set(name, pusher);
  pusher.connection.bind('state_change', (states) => {
    emit({
      client: name,
      type: 'state',
      previous: states.previous,
      current: states.current,
      socket_id: pusher.connection.socket_id ?? null,
    });
  });
  pusher.connection.bind('error', (error) => {
    emit({ client: name, type: 'error', error: plain(error) });
  });
  // Report each frame before pusher-js dispatches it to channels, so a frame's 'message' report
  // precedes the 'event' reports it causes (a plain bind('message') would run after the channels').
  const connectionEmit = pusher.connection.emit.bind(pusher.connection);
  pusher.connection.emit = (event, data) => {
    if (event === 'message') {
      const report = { client: name, type: 'message', event: data.event, data: plain(data.data ?? null) };
      if (data.channel !== undefined) report.channel = data.channel;
      if (data.user_id !== undefined) report.user_id = data.user_id;
      emit(report);
    }
    return connectionEmit(event, data);
  };
  pusher.user.bind_global((event, data) => {
    emit({ client: name, type: 'user_event', event, data: plain(data ?? null) });
  });
  pusher.user.watchlist.bind_global((event, data) => {
    emit({ client: name, type: 'watchlist', event, data: plain(data ?? null) });
  });
  return { state: pusher.connection.state };
}

function get(name) {
  const pusher = clients.get(name);
  if (!pusher) throw new Error(`no client ${name}`);
  return pusher;
}

function channelOf(pusher, channelName) {
  const channel = pusher.channel(channelName);
  if (!channel) throw new Error(`not subscribed to ${channelName}`);
  return channel;
}

const ops = {
  connect,
  subscribe(cmd) {
    const pusher = get(cmd.client);
    const channel = pusher.subscribe(cmd.channel);
    watchChannel(cmd.client, channel, pusher);
    return { subscribed: channel.subscribed, pending: channel.subscriptionPending };
  },
  unsubscribe(cmd) {
    get(cmd.client).unsubscribe(cmd.channel);
    return null;
  },
  trigger(cmd) {
    // channel.trigger: what app code calls; returns whether the frame was handed to the socket.
    return channelOf(get(cmd.client), cmd.channel).trigger(cmd.event, cmd.data);
  },
  send_event(cmd) {
    // pusher.send_event: any frame (e.g. a client event on a channel the client never joined).
    return get(cmd.client).send_event(cmd.event, cmd.data, cmd.channel);
  },
  disconnect(cmd) {
    get(cmd.client).disconnect();
    return null;
  },
  reconnect(cmd) {
    get(cmd.client).connect();
    return null;
  },
  state(cmd) {
    const pusher = get(cmd.client);
    const channels = {};
    for (const channel of pusher.allChannels()) {
      channels[channel.name] = { subscribed: channel.subscribed, pending: channel.subscriptionPending };
    }
    return { state: pusher.connection.state, socket_id: pusher.connection.socket_id ?? null, channels };
  },
  members(cmd) {
    const channel = channelOf(get(cmd.client), cmd.channel);
    if (!channel.members) throw new Error(`${cmd.channel} is not a presence channel`);
    return membersSnapshot(channel);
  },
  signin(cmd) {
    get(cmd.client).signin();
    return null;
  },
  close(cmd) {
    // Forget the client entirely (disconnects it first).
    const pusher = get(cmd.client);
    pusher.disconnect();
    pusher.unbind_all();
    clients.delete(cmd.client);
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
  const op = ops[cmd.op];
  try {
    if (!op) throw new Error(`unknown op ${cmd.op}`);
    const result = op(cmd);
    emit({ type: 'result', id: cmd.id, ok: true, result: result === undefined ? null : result });
  } catch (e) {
    emit({ type: 'result', id: cmd.id, ok: false, error: String(e && e.stack ? e.stack : e) });
  }
});
rl.on('close', () => {
  for (const pusher of clients.values()) {
    try {
      pusher.disconnect();
    } catch {
      // exiting anyway
    }
  }
  process.exit(0);
});
process.on('uncaughtException', (e) => {
  process.stderr.write(`[driver] uncaught: ${e && e.stack ? e.stack : e}\n`);
  emit({ type: 'fatal', error: String(e && e.stack ? e.stack : e) });
});
emit({ type: 'ready' });
