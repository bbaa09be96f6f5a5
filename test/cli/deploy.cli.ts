// `npm run deploy` as a user runs it: it refuses a placeholder ORIGIN_URL or a bad configuration
// before wrangler uploads anything, and otherwise hands its options to `wrangler deploy`.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

function deploy(...args: string[]) {
  return spawnSync(process.execPath, ["scripts/deploy.ts", ...args], {
    encoding: "utf8",
    env: { ...process.env, WRANGLER_SEND_METRICS: "false" },
  });
}

test("the shipped wrangler.toml (ORIGIN_URL = api.internal.example.com) is refused with what to change", () => {
  const r = deploy("--dry-run");
  assert.equal(r.status, 1, r.stdout);
  assert.match(r.stderr, /not deploying wrangler\.toml/);
  assert.match(r.stderr, /ORIGIN_URL is still the example "https:\/\/api\.internal\.example\.com"/);
  assert.match(r.stderr, /Set ORIGIN_URL in wrangler\.toml \(\[vars\]\)/);
  assert.match(r.stderr, /Nothing was uploaded/);
  assert.doesNotMatch(r.stdout, /Total Upload/); // wrangler never ran
});

test("an environment that keeps a placeholder host is refused; a real origin goes on to wrangler deploy", () => {
  const staging = deploy("-c", "test/fixtures/deploy-wrangler.toml", "--env", "staging", "--dry-run");
  assert.equal(staging.status, 1);
  assert.match(staging.stderr, /\[env staging\]/);
  assert.match(staging.stderr, /"https:\/\/staging\.example\.com"/);

  const out = mkdtempSync(join(tmpdir(), "sluice-deploy-"));
  try {
    const ok = deploy("-c", "test/fixtures/deploy-wrangler.toml", "--dry-run", `--outdir=${out}`);
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /Total Upload/);
    assert.match(ok.stdout, /--dry-run: exiting now/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test("a configuration that does not validate is refused, each bad field named", () => {
  const r = deploy("-c", "test/fixtures/bad-wrangler.toml", "--dry-run");
  assert.equal(r.status, 1);
  assert.match(r.stderr, /- ORIGIN_URL: expected http or https/);
  assert.match(r.stderr, /- SLUICE_CONFIG policies\[0\]\.window:/);
  assert.doesNotMatch(r.stdout, /Total Upload/);
});
