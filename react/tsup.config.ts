import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts'],
  format: ['esm', 'cjs'],
  // The server-rendering test builds the JS only, to a scratch folder.
  dts: process.env.HERALD_BUILD_JS_ONLY !== '1',
  sourcemap: true,
  clean: true,
  target: 'es2020',
  // Hooks only work in client components (Next.js app router and friends).
  banner: { js: "'use client';" },
  external: ['react', 'react/jsx-runtime', 'pusher-js'],
});
