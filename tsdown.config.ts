import { defineConfig } from "tsdown";

// The npm package: src/lib.ts bundled to one ESM file with its .d.ts (dist/). hono and zod stay
// imports (a peer dependency and a dependency); `cloudflare:workers` is provided by the runtime.
export default defineConfig({
  entry: { index: "src/lib.ts" },
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
