import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// base './': the built files use relative URLs, so the same dist/ works under
// the gateway's /admin/ and on any other static host (set the API URL there
// with VITE_API_URL at build time or on the login page).
export default defineConfig({
  base: './',
  plugins: [react()],
  build: { outDir: 'dist', emptyOutDir: true, sourcemap: false },
  server: { proxy: { '/api': 'http://127.0.0.1:8420', '/healthz': 'http://127.0.0.1:8420' } },
});
