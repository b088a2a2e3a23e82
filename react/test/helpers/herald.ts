import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const APP = { id: 'app-1', key: 'key-1', secret: 'secret-1' } as const;

/** Interpreter with Herald installed; CI sets HERALD_PYTHON to the project's venv python. */
const PYTHON = process.env.HERALD_PYTHON || 'python3';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

async function waitReady(port: number, child: ChildProcess, output: () => string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`herald exited early (code ${child.exitCode}, signal ${child.signalCode}):\n${output()}`);
    }
    try {
      const response = await fetch(`http://127.0.0.1:${port}/ready`);
      if (response.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`herald did not become ready on port ${port} within ${timeoutMs} ms:\n${output()}`);
}

export interface HeraldServer {
  port: number;
  /** Stop the server. SIGTERM drains (4200 closes); SIGKILL is a crash. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Start it again on the same port with the same apps. */
  start(): Promise<void>;
  /** Everything the current process printed (for failure messages). */
  output(): string;
}

/**
 * Runs `python -m herald serve` on a free loopback port with one app
 * (key-1/secret-1, client events enabled) and waits for GET /ready.
 */
export async function startHerald(): Promise<HeraldServer> {
  const dir = mkdtempSync(join(tmpdir(), 'herald-react-'));
  const appsFile = join(dir, 'apps.json');
  // Channels named history-... keep their last 1000 events (Herald's channel history).
  writeFileSync(appsFile, JSON.stringify({
    apps: [{ ...APP, enable_client_messages: true, history_size: 1000, history_channel_prefixes: ['history-'] }],
  }));
  const port = await freePort();
  let child: ChildProcess | null = null;
  let log = '';

  const start = async (): Promise<void> => {
    log = '';
    const proc = spawn(
      PYTHON,
      [
        '-m', 'herald', 'serve',
        '--host', '127.0.0.1',
        '--port', String(port),
        '--apps-file', appsFile,
        '--drain-seconds', '0.2',
        '--log-level', 'warning',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    proc.stdout?.on('data', (chunk: Buffer) => (log += chunk.toString()));
    proc.stderr?.on('data', (chunk: Buffer) => (log += chunk.toString()));
    child = proc;
    await waitReady(port, proc, () => log);
  };

  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<void> => {
    const proc = child;
    child = null;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.kill(signal);
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  };

  await start();
  return { port, stop, start, output: () => log };
}
