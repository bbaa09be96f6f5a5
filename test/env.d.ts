declare namespace Cloudflare {
  interface Env {
    ORIGIN_PORT: number;
    DEAD_PORT: number;
  }
}
declare namespace Cloudflare {
  interface Env {
    SLOW_LIMITER: DurableObjectNamespace;
    CRASHING_LIMITER: DurableObjectNamespace;
    SLUICE_ANALYTICS: AnalyticsEngineDataset;
  }
}
