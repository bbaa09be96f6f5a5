// `npm run check-config` as a user runs it (node's test runner; not part of the workerd suite).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";

function run(...args: string[]) {
  return spawnSync(process.execPath, ["scripts/check-config.ts", ...args], { encoding: "utf8" });
}

test("the shipped wrangler.toml and the demo's are valid", () => {
  for (const file of ["wrangler.toml", "demo/wrangler.toml"]) {
    const r = run(file);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /SLUICE_CONFIG is valid/);
  }
});

test("a bad wrangler.toml exits 1 and names every bad field, as the worker's 500 does", () => {
  const r = run("test/fixtures/bad-wrangler.toml");
  assert.equal(r.status, 1);
  for (const field of [
    "ORIGIN_URL",
    "identity[0]",
    "policies[0].name",
    "policies[0].limit",
    "policies[0].window",
    "onStoreError",
  ]) {
    assert.match(r.stderr, new RegExp(`- ${field.replace(/[[\].]/g, "\\$&")}:`));
  }
  const body = JSON.parse(r.stdout.trim().split("\n").at(-1) as string);
  assert.equal(body.error, "invalid_config");
  assert.equal(body.issues.length, 6);
});

test("a missing file is a clear error", () => {
  const r = run("no/such/wrangler.toml");
  assert.equal(r.status, 1);
  assert.match(r.stderr, /no\/such\/wrangler.toml/);
});
