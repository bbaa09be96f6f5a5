// The body scanners of settled cost (src/request/admit/cost-scan.ts): the value found at a path
// whatever the chunking, and the stated memory bounds (long keys, big events) holding.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type CostScanner, JsonScan, MAX_EVENT, SseScan } from "../../../src/request/admit/cost-scan.ts";

/** Feeds `text` cut at the given offsets. */
function feed(scan: CostScanner, text: string, cuts: number[] = []): number | undefined {
  let from = 0;
  for (const c of [...cuts].sort((a, b) => a - b)) {
    scan.push(text.slice(from, c));
    from = c;
  }
  scan.push(text.slice(from));
  return scan.end();
}

const path = ["usage", "total_tokens"];

describe("JsonScan", () => {
  it("finds the number at the path, wherever the body is cut", () => {
    const doc = {
      id: 'x"\\{[',
      usage: { prompt_tokens: 5, total_tokens: 1234, nested: { total_tokens: 7 } },
      "us\u00e9": [1, 2, { usage: { total_tokens: 9 } }],
      choices: [{ usage: { total_tokens: 999 } }],
    };
    const text = JSON.stringify(doc, null, 2);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: text.length }), { maxLength: 12 }), (cuts) => {
        expect(feed(new JsonScan(path), text, cuts)).toBe(1234);
      }),
      { numRuns: 300 },
    );
  });

  it("array indexes, escaped keys, exponents and fractions (rounded up)", () => {
    expect(feed(new JsonScan(["a", "1", "b"]), '{"a":[{"b":1},{"b":2.5e1}]}')).toBe(25);
    expect(feed(new JsonScan(['k"ey']), '{"k\\"ey": 3.2}')).toBe(4);
    expect(feed(new JsonScan(["k\u00e9"]), '{"k\\u00e9":8}')).toBe(8);
  });

  it("a string, a negative number or no value at the path: none", () => {
    expect(feed(new JsonScan(path), '{"usage":{"total_tokens":"12"}}')).toBeUndefined();
    expect(feed(new JsonScan(path), '{"usage":{"total_tokens":-3}}')).toBeUndefined();
    expect(feed(new JsonScan(path), '{"usage":{}}')).toBeUndefined();
    expect(feed(new JsonScan(path), '{"usage":{"total_tokens":12')).toBe(12);
  });

  it("a key longer than 256 characters never matches (it is kept cut short)", () => {
    const long = "k".repeat(300);
    expect(feed(new JsonScan([long]), JSON.stringify({ [long]: 5 }))).toBeUndefined();
    expect(feed(new JsonScan(["k".repeat(256)]), JSON.stringify({ ["k".repeat(256)]: 5 }))).toBe(5);
  });
});

describe("SseScan", () => {
  const events = [
    'data: {"choices":[{"delta":{"content":"Hi"}}]}',
    "",
    ": a comment",
    'data: {"usage":{"total_tokens":11}}',
    "",
    'data: {"choices":[],',
    'data: "usage":{"total_tokens":42}}',
    "",
    "data: [DONE]",
    "",
    "",
  ];

  it("the last event with the value counts, whatever the line ends and the cuts", () => {
    for (const eol of ["\n", "\r\n", "\r"]) {
      const text = events.join(eol);
      fc.assert(
        fc.property(fc.array(fc.integer({ min: 0, max: text.length }), { maxLength: 10 }), (cuts) => {
          expect(feed(new SseScan(path), text, cuts)).toBe(42);
        }),
        { numRuns: 100 },
      );
    }
  });

  it("an event over the bound is skipped; the events around it are read", () => {
    const big = `data: {"usage":{"total_tokens":99},"pad":"${"x".repeat(MAX_EVENT)}"}`;
    expect(feed(new SseScan(path), `data: {"usage":{"total_tokens":5}}\n\n${big}\n\n`)).toBe(5);
    expect(feed(new SseScan(path), `${big}\n\ndata: {"usage":{"total_tokens":6}}\n\n`)).toBe(6);
  });
});
