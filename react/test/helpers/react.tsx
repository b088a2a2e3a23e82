import type { ReactNode } from 'react';
import { createRoot, type Root } from 'react-dom/client';

export interface Mounted {
  container: HTMLElement;
  root: Root;
  render(node: ReactNode): void;
  unmount(): void;
  /** Text of the element with this data-testid (null when absent). */
  text(testId: string): string | null;
}

/**
 * Renders into a jsdom container with the real React DOM client. Network
 * events update state asynchronously, so tests poll with waitFor instead of
 * wrapping everything in act().
 */
export function mount(node: ReactNode): Mounted {
  const container = document.createElement('div');
  document.body.appendChild(container);
  const root = createRoot(container);
  root.render(node);
  return {
    container,
    root,
    render: (next) => root.render(next),
    unmount: () => {
      root.unmount();
      container.remove();
    },
    text: (testId) => container.querySelector(`[data-testid="${testId}"]`)?.textContent ?? null,
  };
}

export async function waitFor<T>(check: () => T | Promise<T>, { timeout = 10_000, interval = 20 } = {}): Promise<T> {
  const deadline = Date.now() + timeout;
  let lastError: unknown = new Error('condition never held');
  while (Date.now() < deadline) {
    try {
      const result = await check();
      if (result !== false && result !== undefined && result !== null) return result;
      lastError = new Error(`condition returned ${String(result)}`);
    } catch (error) {
      lastError = error;
    }
    await sleep(interval);
  }
  throw lastError;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
