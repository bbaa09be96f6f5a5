import { cloudflareTest } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

export default defineConfig({
  plugins: [
    cloudflareTest(({ inject }) => ({
      wrangler: { configPath: "./test/wrangler.test.toml" },
      miniflare: {
        bindings: {
          ORIGIN_URL: `http://127.0.0.1:${inject<number>("originPort")}`,
          ORIGIN_PORT: inject<number>("originPort"),
          DEAD_PORT: inject<number>("deadPort"),
          // The secret alerts are signed with (test/objects/limiter/alerts.test.ts).
          SLUICE_WEBHOOK_SECRET: "test-webhook-secret",
        },
      },
    })),
  ],
  test: {
    globalSetup: ["./test/support/global-setup.ts"],
    include: ["test/**/*.test.ts"],
    // test/consumer is its own package with its own vitest run (npm run test:package).
    exclude: ["test/consumer/**", "**/node_modules/**"],
    testTimeout: 30_000,
  },
});
