import { createRequire } from 'node:module';
import { defineConfig } from 'vitest/config';

const require = createRequire(import.meta.url);

export default defineConfig({
  resolve: {
    alias: [
      // Run pusher-js's browser build (the one bundlers ship to browsers) on
      // jsdom's WebSocket and XMLHttpRequest, for the tests and for the
      // provider's lazy import('pusher-js') alike.
      { find: /^pusher-js$/, replacement: require.resolve('pusher-js/dist/web/pusher.js') },
    ],
  },
  test: {
    environment: 'jsdom',
    include: ['test/**/*.test.{ts,tsx}'],
    // Every file starts its own Herald server; the reconnect test needs time.
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Two cores: two files at a time, each with its own server.
    maxWorkers: 2,
  },
});
