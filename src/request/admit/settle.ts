/**
 * Settled cost (docs/algorithms.md#settled-cost): a rate policy with `settle` books its `cost` as
 * an estimate at admission; once the origin answers, the real cost is read from the answer and
 * the object changes the booking to it (LimiterRpc.settle). This module reads the real costs:
 * `header:<name>` from the response headers, `bytes` and `json:<dot.path>` from the body as it
 * streams to the client, through a TransformStream that passes every chunk on at once, unchanged.
 */
import type { SluiceConfig } from "../../config/config.ts";
import type { PolicyItem } from "../../protocol.ts";
import { type CostScanner, JsonScan, SseScan } from "./cost-scan.ts";

const sources = new WeakMap<SluiceConfig, Map<string, string>>();

/** Policy name -> its settle source, for the policies that have one. */
export function settledOf(config: SluiceConfig): Map<string, string> {
  let m = sources.get(config);
  if (!m) {
    m = new Map();
    for (const p of config.policies) if (p.kind === "rate" && p.settle) m.set(p.name, p.settle);
    sources.set(config, m);
  }
  return m;
}

/** True when some of `items` is settled: its object must book each request itself (no allowance). */
export function hasSettled(config: SluiceConfig, items: readonly PolicyItem[]): boolean {
  const m = settledOf(config);
  return m.size > 0 && items.some((i) => m.has(i.policy));
}

/** A header's value as a cost: a non-negative integer, else none. */
function headerCost(v: string | null): number | undefined {
  return v !== null && /^\s*\d{1,15}\s*$/.test(v) ? Number(v) : undefined;
}

/** Real costs by source ("bytes", "header:x", "json:a.b"); a source without a value is left out. */
export type Costs = Map<string, number>;

/**
 * Reads the real cost of every source in `wanted` from `res`. Header sources are read at once.
 * When a body source is wanted, the response returned carries the same body through a counting
 * stream (never holding a chunk back), and `done` is called with every value found once the body
 * has ended, failed, or the client went away (then what was sent is what counts). Otherwise `res`
 * is returned as it is and the costs are known at once.
 */
export function readCosts(res: Response, wanted: ReadonlySet<string>): { res: Response; costs: Promise<Costs> } {
  const costs: Costs = new Map();
  const body: string[] = [];
  for (const s of wanted) {
    if (s.startsWith("header:")) {
      const v = headerCost(res.headers.get(s.slice(7)));
      if (v !== undefined) costs.set(s, v);
    } else body.push(s);
  }
  if (body.length === 0 || !res.body) {
    if (body.includes("bytes")) costs.set("bytes", 0);
    return { res, costs: Promise.resolve(costs) };
  }
  const sse = (res.headers.get("content-type") ?? "").toLowerCase().includes("text/event-stream");
  const scans = body
    .filter((s) => s.startsWith("json:"))
    .map((s): [string, CostScanner] => {
      const path = s.slice(5).split(".");
      return [s, sse ? new SseScan(path) : new JsonScan(path)];
    });
  const decoder = scans.length > 0 ? new TextDecoder() : undefined;
  let bytes = 0;
  const finish = (): Costs => {
    if (decoder) for (const [, scan] of scans) scan.push(decoder.decode());
    if (body.includes("bytes")) costs.set("bytes", bytes);
    for (const [s, scan] of scans) {
      const v = scan.end();
      if (v !== undefined) costs.set(s, v);
    }
    return costs;
  };
  const counter = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, ctl) {
      ctl.enqueue(chunk);
      bytes += chunk.byteLength;
      if (decoder) {
        const text = decoder.decode(chunk, { stream: true });
        for (const [, scan] of scans) scan.push(text);
      }
    },
  });
  // Ends when the body has been sent, the origin's body failed, or the client went away.
  const ended = res.body.pipeTo(counter.writable).then(finish, finish);
  return { res: new Response(counter.readable, res), costs: ended };
}
