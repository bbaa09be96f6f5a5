import { cloudflareTest } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

// Two projects. "unit": tests of pure modules (algorithms, ledger, allowances), named
// *.unit.test.ts, run in Node: no runtime to start, so the property tests run faster. "workers":
// everything that needs the Workers runtime (the worker, Durable Objects, a real origin) runs
// inside workerd through @cloudflare/vitest-plugin.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          environment: "node",
          include: ["test/**/*.unit.test.ts"],
          exclude: ["test/consumer/**", "**/node_modules/**"],
          testTimeout: 30_000,
        },
      },
      {
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
          name: "workers",
          globalSetup: ["./test/support/global-setup.ts"],
          include: ["test/**/*.test.ts"],
          // test/consumer is its own package with its own vitest run (npm run test:package).
          exclude: ["test/**/*.unit.test.ts", "test/consumer/**", "**/node_modules/**"],
          testTimeout: 30_000,
        },
      },
    ],
  },
});
