import type { TestProject } from "vitest/node";
import { startOrigin } from "./origin-server";

declare module "vitest" {
  export interface ProvidedContext {
    originPort: number;
    deadPort: number;
  }
}

/** Starts the real HTTP origin the worker proxies to, and finds a port nothing listens on. */
export default async function setup(project: TestProject) {
  const origin = await startOrigin();
  project.provide("originPort", origin.port);
  project.provide("deadPort", await origin.deadPort());
  return async () => origin.close();
}
