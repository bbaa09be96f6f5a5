// Imported before src: src/allowance.ts draws its isolate id with crypto.randomUUID() at module
// scope, which workerd refuses ("Disallowed operation called within global scope"), so the
// bundle would not start. Until src draws it lazily, the bench answers that first call with a
// fixed id (one isolate serves the bench, so it is unique) and puts the real function back.
// (package.json says sideEffects: false, so the bench worker uses the export to keep the module.)
export const BENCH_ISOLATE_ID = "00000000-0000-4000-8000-00000000be4c";
const real = crypto.randomUUID;
crypto.randomUUID = () => {
  crypto.randomUUID = real;
  return BENCH_ISOLATE_ID;
};
