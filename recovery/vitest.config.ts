import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // pusher-js's Node build (and laravel-echo on it) against a real Herald per test file.
    environment: 'node',
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    maxWorkers: 2,
  },
});
