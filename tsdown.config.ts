import { defineConfig } from "tsdown";

// The npm package: src/lib.ts bundled to one ESM file with its .d.ts (dist/index.js), and the
// client, `sluice/client` (src/client/index.ts, no import at all: dist/client.js). hono and zod stay
// imports (a peer dependency and a dependency); `cloudflare:workers` is provided by the runtime.
export default defineConfig({
  entry: { index: "src/lib.ts", client: "src/client/index.ts" },
  format: "esm",
  platform: "neutral",
  target: "es2024",
  outDir: "dist",
  clean: true,
  dts: true,
  sourcemap: false,
  deps: { neverBundle: [/^cloudflare:/] },
  tsconfig: "tsconfig.json",
});
