import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import PusherServer from 'pusher';
import { APP } from './herald';

export interface AuthServer {
  /** Base URL, e.g. http://127.0.0.1:PORT */
  url: string;
  /** Requests received, per path. */
  calls: Record<string, Array<Record<string, string>>>;
  close(): Promise<void>;
}

function readForm(req: IncomingMessage): Promise<Record<string, string>> {
  return new Promise((resolve, reject) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => resolve(Object.fromEntries(new URLSearchParams(body))));
    req.on('error', reject);
  });
}

/**
 * The application's auth endpoints, as a real app would run them: pusher-js
 * POSTs form data, and the npm `pusher` server SDK signs the answer with the
 * app secret.
 *
 *   POST /pusher/auth       channel authorization; presence members come from
 *                           the `user_id` / `user_name` params the client sends
 *   POST /pusher/bad-auth   same, signed with a wrong secret (server must refuse)
 *   POST /pusher/user-auth  user authentication for pusher.signin(); `watchlist`
 *                           param is a comma-separated list of user ids
 */
export async function startAuthServer(): Promise<AuthServer> {
  const signer = new PusherServer({
    appId: APP.id,
    key: APP.key,
    secret: APP.secret,
    host: '127.0.0.1',
    // Lets the endpoint authorize private-encrypted- channels too (32 bytes, test only).
    encryptionMasterKeyBase64: Buffer.alloc(32, 7).toString('base64'),
  });
  const wrongSigner = new PusherServer({
    appId: APP.id,
    key: APP.key,
    secret: 'not-the-secret',
    host: '127.0.0.1',
  });
  const calls: AuthServer['calls'] = {};

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    // pusher-js in jsdom runs on another origin than this server.
    res.setHeader('Access-Control-Allow-Origin', '*');
    res.setHeader('Access-Control-Allow-Headers', '*');
    if (req.method === 'OPTIONS') {
      res.writeHead(204).end();
      return;
    }
    const path = (req.url ?? '').split('?')[0];
    const form = await readForm(req);
    (calls[path] ??= []).push(form);
    const userId = form.user_id ?? 'anonymous';
    const info = { name: form.user_name ?? userId };
    let answer: unknown;
    if (path === '/pusher/auth' || path === '/pusher/bad-auth') {
      const channel = form.channel_name;
      const presence = channel.startsWith('presence-') ? { user_id: userId, user_info: info } : undefined;
      answer = (path === '/pusher/auth' ? signer : wrongSigner).authorizeChannel(form.socket_id, channel, presence);
    } else if (path === '/pusher/user-auth') {
      const watchlist = form.watchlist ? form.watchlist.split(',') : undefined;
      answer = signer.authenticateUser(form.socket_id, { id: userId, user_info: info, watchlist });
    } else {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(answer));
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      res.writeHead(500).end(String(error));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    calls,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
