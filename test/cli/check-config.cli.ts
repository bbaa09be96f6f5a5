// `npm run check-config` as a user runs it (node's test runner; not part of the workerd suite).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
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

test("per-key policies without an ip-scoped backstop: a warning naming them, still valid (exit 0)", () => {
  for (const file of ["wrangler.toml", "demo/wrangler.toml"]) assert.doesNotMatch(run(file).stderr, /warning/);
  const r = run("test/fixtures/no-backstop-wrangler.toml");
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /SLUICE_CONFIG is valid/);
  assert.match(r.stderr, /warning: per-key policies \(standard\) have no ip-scoped backstop/);
  assert.match(r.stderr, /scope = \["ip"\]/);
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

test("every docs/examples/*.toml passes check-config, with the policies its provider's page describes", () => {
  const expected: Record<string, string> = {
    "apviso.toml": "standard, per-ip-backstop",
    "facturapi.toml": "detail-reads, list-reads, creation, writes, heavy-writes, per-address",
    "lexoffice.toml": "per-second, per-address",
    "smenso.toml": "per-token, per-workspace, per-address",
    "llm-tokens.toml": "tokens-per-minute, tokens-per-month, parallel, per-address",
    "tiered.toml": "per-minute, monthly, per-address",
    "visma.toml": "4-fixed-window, 6-fixed-window, per-address",
  };
  const files = readdirSync("docs/examples").filter((f) => f.endsWith(".toml"));
  for (const name of Object.keys(expected)) assert.ok(files.includes(name), `docs/examples/${name} is missing`);
  for (const file of files) {
    const r = run(`docs/examples/${file}`);
    assert.equal(r.status, 0, `${file}: ${r.stderr}`);
    assert.match(r.stdout, /SLUICE_CONFIG is valid/);
    assert.doesNotMatch(r.stderr, /warning/, `${file} stands without an ip-scoped backstop`);
    if (expected[file]) assert.ok(r.stdout.includes(`(policies: ${expected[file]})`), r.stdout);
  }
});
