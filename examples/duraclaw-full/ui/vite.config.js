import { defineConfig } from 'vite';

// The UI is embedded by duraclaw-orchestrator (src/assets.rs) and served
// under a strict Content-Security-Policy: no inline scripts, no remote
// origins. So the build emits only external, content-hashed files under
// assets/ and no module-preload polyfill (it would need inline code).
export default defineConfig({
  base: '/',
  esbuild: {
    jsx: 'automatic',
    jsxImportSource: 'preact',
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2020',
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    sourcemap: false,
    reportCompressedSize: false,
    chunkSizeWarningLimit: 400,
  },
  server: {
    proxy: {
      '/api': { target: 'http://127.0.0.1:8787', ws: true, changeOrigin: false },
    },
  },
});
