// Vite's import forms the tests use (transformed by Vite before workerd runs them), typed here
// rather than through vite/client, whose DOM-flavoured globals do not belong in a Workers test.
declare module "*.toml?raw" {
  const text: string;
  export default text;
}

interface ImportMeta {
  glob(pattern: string, options: { query: "?raw"; import: "default"; eager: true }): Record<string, string>;
}
