/**
 * Finding a number at a dot path (`usage.total_tokens`) in a response body as it streams past,
 * never holding the body (docs/algorithms.md#settled-cost): a JSON body is scanned character by
 * character, a `text/event-stream` body event by event. Memory per request is bounded whatever
 * the body's size, as stated in docs/reference.md#13-settled-cost:
 * - JSON: the path of the value being read (at most MAX_DEPTH levels, each key kept up to
 *   MAX_KEY characters) and one number's characters (up to MAX_NUMBER); nothing else is kept.
 * - event stream: one event's data (up to MAX_EVENT bytes); a longer event is skipped.
 */

/** Keys longer than this are kept cut short (they then never match a configured path). */
export const MAX_KEY = 256;
/** Deeper nesting stops the scan: the value is then missing and the estimate stays. */
export const MAX_DEPTH = 1024;
const MAX_NUMBER = 64;
/** An event-stream event whose data is longer than this (UTF-16 units, about bytes) is skipped. */
export const MAX_EVENT = 64 * 1024;

export interface CostScanner {
  /** Takes the next decoded piece of the body. */
  push(text: string): void;
  /** The body ended (or was cut short): the last value found at the path, if any. */
  end(): number | undefined;
}

/** A number as a cost: finite and non-negative, rounded up to whole units; otherwise none. */
export function asCost(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) && v >= 0 ? Math.ceil(v) : undefined;
}

interface Frame {
  array: boolean;
  /** Object: the current member's key (null until read). Array: unused. */
  key: string | null;
  /** Array: the current element's index. */
  index: number;
  /** Object: the next string is a key. */
  expectKey: boolean;
}

const NUMBER_CHARS = /[-+0-9.eE]/;
const SPECIAL = /["\\]/g;

/** A JSON body, scanned as it passes: the value of the last number found at `path`. */
export class JsonScan implements CostScanner {
  private readonly frames: Frame[] = [];
  private inString = false;
  private escape = 0; // 0: none; 1: after a backslash; 2..5: reading \uXXXX hex digits
  private hex = "";
  private key: string | null = null; // characters of a key being read, else null
  private num: string | null = null;
  private value: number | undefined;
  private broken = false;
  private readonly path: readonly string[];

  constructor(path: readonly string[]) {
    this.path = path;
  }

  push(text: string): void {
    let i = 0;
    while (i < text.length && !this.broken) {
      if (this.inString && this.key === null && this.escape === 0) {
        // Inside a value string nothing is kept: skip to its next quote or backslash at once.
        SPECIAL.lastIndex = i;
        const m = SPECIAL.exec(text);
        if (!m) return;
        i = m.index;
      }
      this.char(text[i] as string);
      i++;
    }
  }

  end(): number | undefined {
    this.endNumber();
    return this.value;
  }

  private char(c: string): void {
    if (this.inString) {
      this.stringChar(c);
      return;
    }
    if (this.num !== null) {
      if (NUMBER_CHARS.test(c)) {
        if (this.num.length < MAX_NUMBER) this.num += c;
        return;
      }
      this.endNumber();
    }
    const top = this.frames.at(-1);
    switch (c) {
      case '"':
        this.inString = true;
        this.key = top && !top.array && top.expectKey ? "" : null;
        return;
      case "{":
      case "[":
        if (this.frames.length >= MAX_DEPTH) this.broken = true;
        else this.frames.push({ array: c === "[", key: null, index: 0, expectKey: c === "{" });
        return;
      case "}":
      case "]":
        this.frames.pop();
        return;
      case ",":
        if (top?.array) top.index++;
        else if (top) top.expectKey = true;
        return;
      default:
        if (c === "-" || (c >= "0" && c <= "9")) this.num = c;
    }
  }

  private stringChar(c: string): void {
    if (this.escape === 1) {
      if (c === "u") {
        this.escape = 2;
        this.hex = "";
        return;
      }
      this.escape = 0;
      this.keyChar(({ n: "\n", t: "\t", r: "\r", b: "\b", f: "\f" } as Record<string, string>)[c] ?? c);
      return;
    }
    if (this.escape >= 2) {
      this.hex += c;
      if (this.hex.length === 4) {
        this.escape = 0;
        this.keyChar(String.fromCharCode(Number.parseInt(this.hex, 16)));
      }
      return;
    }
    if (c === "\\") this.escape = 1;
    else if (c === '"') {
      this.inString = false;
      const top = this.frames.at(-1);
      if (this.key !== null && top) {
        top.key = this.key;
        top.expectKey = false;
      }
      this.key = null;
    } else this.keyChar(c);
  }

  private keyChar(c: string): void {
    if (this.key !== null && this.key.length < MAX_KEY + 1) this.key += c;
  }

  private endNumber(): void {
    if (this.num === null) return;
    const n = this.num;
    this.num = null;
    if (!this.atPath()) return;
    const v = asCost(Number(n));
    if (v !== undefined) this.value = v;
  }

  private atPath(): boolean {
    const { frames, path } = this;
    if (frames.length !== path.length) return false;
    return frames.every((f, i) => (f.array ? String(f.index) : f.key) === path[i]);
  }
}

/** The number at `path` of a parsed JSON value, if there is one. */
export function valueAt(doc: unknown, path: readonly string[]): number | undefined {
  let v = doc;
  for (const k of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return asCost(v);
}

/**
 * A `text/event-stream` body: each event's `data:` lines joined and parsed as JSON once the event
 * ends (a blank line, or the end of the body); the last event with a number at `path` gives it.
 * Events that are not JSON (`[DONE]`) or longer than MAX_EVENT are skipped.
 */
export class SseScan implements CostScanner {
  private line = "";
  private data: string[] = [];
  private size = 0;
  private skipping = false;
  private value: number | undefined;
  private lastWasCR = false;
  private readonly path: readonly string[];

  constructor(path: readonly string[]) {
    this.path = path;
  }

  push(text: string): void {
    let from = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (c !== "\n" && c !== "\r") continue;
      // "\r\n" is one line end.
      const skipLf = c === "\n" && this.lastWasCR && i === from && this.line === "";
      this.lastWasCR = c === "\r";
      if (!skipLf) this.take(text.slice(from, i), true);
      from = i + 1;
    }
    if (from < text.length) {
      this.lastWasCR = false;
      this.take(text.slice(from), false);
    }
  }

  end(): number | undefined {
    if (this.line !== "") this.lineDone(this.line);
    this.dispatch();
    return this.value;
  }

  private take(piece: string, ends: boolean): void {
    if (this.line.length + piece.length > MAX_EVENT) {
      this.skipping = true;
      this.line = "";
    } else this.line += piece;
    if (!ends) return;
    const line = this.line;
    this.line = "";
    this.lineDone(line);
  }

  private lineDone(line: string): void {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (this.skipping || !line.startsWith("data:")) return;
    const d = line.slice(line.startsWith("data: ") ? 6 : 5);
    this.size += d.length + 1;
    if (this.size > MAX_EVENT) {
      this.skipping = true;
      this.data = [];
    } else this.data.push(d);
  }

  private dispatch(): void {
    const data = this.data.join("\n");
    const skipped = this.skipping;
    this.data = [];
    this.size = 0;
    this.skipping = false;
    if (skipped || data === "") return;
    try {
      const v = valueAt(JSON.parse(data), this.path);
      if (v !== undefined) this.value = v;
    } catch {
      // Not JSON (`[DONE]`, a comment-like payload): no value in this event.
    }
  }
}
