import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The test app: history on every channel except those of `plain-`... (see apps below). */
export const APP = { id: '1', key: 'rec-key', secret: 'rec-secret' } as const;
export const PLAIN_APP = { id: '2', key: 'plain-key', secret: 'plain-secret' } as const;

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

async function waitReady(port: number, child: ChildProcess, output: () => string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`herald exited early (code ${child.exitCode}):\n${output()}`);
    }
    try {
      if ((await fetch(`http://127.0.0.1:${port}/ready`)).status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`herald did not become ready on port ${port}:\n${output()}`);
}

export interface HeraldServer {
  port: number;
  /** SIGTERM drains (4200 closes, pusher-js reconnects); SIGKILL is a crash. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Start again on the same port: in memory mode, with an empty history (new epochs). */
  start(): Promise<void>;
  output(): string;
}

/** `python -m herald serve` (in memory) with APP keeping 1000 events per channel, PLAIN_APP none. */
export async function startHerald(): Promise<HeraldServer> {
  const dir = mkdtempSync(join(tmpdir(), 'herald-recovery-'));
  const appsFile = join(dir, 'apps.json');
  writeFileSync(appsFile, JSON.stringify({
    apps: [
      { ...APP, history_size: 1000, history_ttl_s: 600, history_channel_prefixes: ['room-'] },
      { ...PLAIN_APP },
    ],
  }));
  const port = await freePort();
  let child: ChildProcess | null = null;
  let log = '';
  const start = async (): Promise<void> => {
    log = '';
    const proc = spawn(PYTHON, ['-m', 'herald', 'serve', '--host', '127.0.0.1', '--port', String(port),
      '--apps-file', appsFile, '--drain-seconds', '0.2', '--log-level', 'warning'], { stdio: ['ignore', 'pipe', 'pipe'] });
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
