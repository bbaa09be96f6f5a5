/** What the admin routes under src/admin/keys/ share: the bindings, request checks and the key's object. */
import * as z from "zod/mini";
import type { ConcurrencyPolicy, RatePolicy, SluiceConfig } from "../../config/config.ts";
import type { SluiceDirectory } from "../../objects/directory/object.ts";
import type { SluiceLimiter } from "../../objects/limiter/object.ts";
import { isKeyOnly, KEY_ID_RE, perKeyName } from "../../protocol.ts";
import { keyIdOf } from "../../request/identify/identity.ts";
import { SluiceError } from "../../util/errors.ts";

/** The bindings the admin API reads. */
export type AdminEnv = {
  Bindings: {
    SLUICE_LIMITER: DurableObjectNamespace<SluiceLimiter>;
    /** The top-keys index (optional: without it /keys/top answers 500 invalid_config). */
    SLUICE_DIRECTORY?: DurableObjectNamespace<SluiceDirectory>;
    SLUICE_ADMIN_TOKEN?: string;
  };
};

export function badRequest(issues: string[]): SluiceError {
  return new SluiceError(400, "invalid_request", issues.join("; "), { issues });
}

/** The keyId a request names, by `key` (raw, hashed here: X-Sluice-Key or a JSON body) or `keyId`. */
export async function keyIdFrom(key: unknown, keyId: unknown): Promise<string> {
  if (typeof key === "string" && key.length > 0) return keyIdOf(key);
  if (typeof keyId === "string" && KEY_ID_RE.test(keyId)) return keyId;
  if (keyId !== undefined) throw badRequest(["keyId: expected 16 lower-case hex digits"]);
  throw badRequest(["key: required (the X-Sluice-Key header or a JSON body), or keyId"]);
}

export function keyPolicies(config: SluiceConfig): (RatePolicy | ConcurrencyPolicy)[] {
  return config.policies.filter((p) => isKeyOnly(p.scope));
}

/** The key's own limiter object. */
export function stubFor(env: AdminEnv["Bindings"], keyId: string) {
  return env.SLUICE_LIMITER.get(env.SLUICE_LIMITER.idFromName(perKeyName(keyId)));
}

/** The fields naming a key and one of its policies, shared by the override bodies. */
export const keyFields = {
  key: z.optional(z.string().check(z.minLength(1))),
  keyId: z.optional(z.string()),
  policy: z.string().check(z.minLength(1)),
};

async function jsonBody(req: Request): Promise<unknown> {
  try {
    return await req.json();
  } catch {
    throw badRequest(["body: expected a JSON object"]);
  }
}

function zodIssues(error: z.core.$ZodError): string[] {
  return error.issues.map((i) => `${i.path.join(".") || "body"}: ${i.message}`);
}

/** The request's JSON body checked against `schema`; 400 invalid_request naming each bad field. */
export async function bodyOf<T>(req: Request, schema: z.ZodMiniType<T>): Promise<T> {
  const parsed = schema.safeParse(await jsonBody(req));
  if (!parsed.success) throw badRequest(zodIssues(parsed.error));
  return parsed.data;
}
