import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    environment: 'jsdom',
    include: ['test/**/*.test.{ts,tsx}'],
    // Every file starts its own Herald server; a reconnect test needs time.
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Two cores: two files at a time, each with its own server.
    maxWorkers: 2,
    fileParallelism: true,
  },
});
