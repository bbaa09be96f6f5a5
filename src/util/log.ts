/**
 * One JSON line per event, for Workers Logs and `wrangler tail`. Callers pass keyId, never a raw key.
 */
export function logEvent(event: string, fields: Record<string, unknown> = {}): void {
  console.log(JSON.stringify({ event, ...fields }));
}
