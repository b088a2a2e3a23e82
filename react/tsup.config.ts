import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts'],
  format: ['esm', 'cjs'],
  // The server-rendering test builds the JS only, to a scratch folder.
  dts: process.env.HERALD_BUILD_JS_ONLY !== '1' ? { resolve: ['herald-channels-recovery'] } : false,
  sourcemap: true,
  clean: true,
  target: 'es2020',
  // Hooks only work in client components (Next.js app router and friends).
  banner: { js: "'use client';" },
  external: ['react', 'react/jsx-runtime', 'pusher-js'],
  // The recovery helper (../recovery) is built into this package, so it installs on its own; apps
  // that use the helper directly take it from here too (one helper per pusher-js client).
  noExternal: ['herald-channels-recovery'],
});
