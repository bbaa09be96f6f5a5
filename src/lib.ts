/**
 * Sluice as a library: the Hono middleware and the Durable Object class, for a Workers app of its
 * own. Export `SluiceLimiter` from the app's entry and bind it as SLUICE_LIMITER (docs/reference.md#8-as-a-library).
 */
export { createApp, type SluiceEnv } from "./app.ts";
export {
  ConfigError,
  type Duration,
  parseConfig,
  type SluiceConfig,
  type SluiceConfigInput,
} from "./config/config.ts";
export { type SluiceOptions, type SluiceVariables, sluice } from "./middleware/sluice.ts";
export { SluiceDirectory } from "./objects/directory/object.ts";
export { SluiceLimiter } from "./objects/limiter/object.ts";
export { SluiceError } from "./util/errors.ts";

import type { SluiceConfigInput } from "./config/config.ts";
/** One entry of `policies` as written in configuration (a rate or a concurrency policy). */
export type SluicePolicyInput = SluiceConfigInput["policies"][number];
