import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// The backend serves the build (dist/) itself. `npm run dev` serves the page with hot reload and
// forwards the API to the backend on CHAT_BACKEND (default http://127.0.0.1:8000).
const backend = process.env.CHAT_BACKEND ?? 'http://127.0.0.1:8000';
const api = ['/login', '/logout', '/me', '/directory', '/config', '/pusher', '/rooms'];

export default defineConfig({
  root: 'web',
  plugins: [react()],
  resolve: {
    // herald-channels-react is linked from ../../react, whose own node_modules hold other copies of React
    // and pusher-js (its dev dependencies): one copy of each for the whole page.
    dedupe: ['react', 'react-dom', 'pusher-js'],
  },
  build: { outDir: '../dist', emptyOutDir: true },
  server: { proxy: Object.fromEntries(api.map((path) => [path, backend])) },
});
