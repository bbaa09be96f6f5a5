declare namespace Cloudflare {
  interface Env {
    ORIGIN_PORT: number;
    DEAD_PORT: number;
  }
}
