/**
 * The time source of the limiter, in ms since the Unix epoch. Production reads Date.now(); tests
 * replace `clock.now` to drive every window boundary exactly, with no sleeping. The worker and the
 * Durable Objects of one isolate share this module, so one assignment moves both.
 */
export const clock = {
  now: (): number => Date.now(),
};
