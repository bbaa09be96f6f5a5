// The dashboard's hourly chart (plain SVG): drawChart, called by script.js. scripts/embed-dashboard.ts
// puts this file and script.js, in that order, into one inline script (script.gen.ts), so the two
// share one top level: a name declared in both would stop the page's script. Plain browser
// JavaScript, like script.js; it reads nothing of script.js's.

const SVG = "http://www.w3.org/2000/svg";
const HOUR_MS = 3600000;
// The chart in SVG units: width and height; left, bottom and top margins (the scale, the hour labels).
const W = 1000,
  H = 220,
  L = 40,
  B = 24,
  T = 8;

function svgEl(name, attrs) {
  const e = document.createElementNS(SVG, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  return e;
}

/** A grey label of the chart's scale or hours. */
function svgText(svg, x, y, anchor, text) {
  const t = svgEl("text", { x, y, "text-anchor": anchor, "font-size": 11, fill: "#57606a" });
  t.textContent = text;
  svg.appendChild(t);
}

/** The last `range` hours up to `now` (hour indexes), each [hour, {passed, rejected}], quiet hours as zeros. */
function chartHours(usage, range, now) {
  const byHour = new Map(usage.hourly.map((h) => [Math.floor(Date.parse(h.hour) / HOUR_MS), h]));
  const hours = [];
  for (let h = now - range + 1; h <= now; h++) hours.push([h, byHour.get(h) || { passed: 0, rejected: 0 }]);
  return hours;
}

/** One hour's bar: passed (blue) with rejected (red) stacked on it, and a tooltip; `y` maps a count to a height. */
function bar(h, v, x, w, y) {
  const g = svgEl("g", {});
  const title = svgEl("title", {});
  title.textContent = `${new Date(h * HOUR_MS).toISOString().slice(0, 13)}:00Z  passed ${v.passed}, rejected ${v.rejected}`;
  g.appendChild(title);
  if (v.passed > 0)
    g.appendChild(
      svgEl("rect", {
        class: "bar-passed",
        x,
        width: w,
        y: y(v.passed),
        height: H - B - y(v.passed),
        fill: "#2f81f7",
      }),
    );
  if (v.rejected > 0)
    g.appendChild(
      svgEl("rect", {
        class: "bar-rejected",
        x,
        width: w,
        y: y(v.passed + v.rejected),
        height: y(v.passed) - y(v.passed + v.rejected),
        fill: "#cf222e",
      }),
    );
  return g;
}

function hourLabel(svg, h, x, anchor) {
  svgText(svg, x, H - 6, anchor, `${new Date(h * HOUR_MS).toISOString().slice(5, 13).replace("T", " ")}:00`);
}

/** The line under the chart: the range and its totals. */
function summarise(hours, range) {
  let passed = 0,
    rejected = 0;
  for (const [, v] of hours) {
    passed += v.passed;
    rejected += v.rejected;
  }
  document.getElementById("chart-summary").textContent =
    "Last " +
    (range === 24 ? "24 hours" : `${range / 24} days`) +
    ": passed " +
    passed +
    ", rejected " +
    rejected +
    " (UTC hours)";
}

/** The open key's hourly chart over `range` hours (24 h, 7 d, 30 d) from its usage answer; none before a key is open. */
// biome-ignore lint/correctness/noUnusedVariables: script.js calls it (the two files are one script, see above)
function drawChart(usage, range) {
  const svg = document.getElementById("chart");
  svg.textContent = "";
  if (!usage) return;
  for (const b of document.querySelectorAll("[data-range]"))
    b.setAttribute("aria-pressed", String(Number(b.dataset.range) === range));
  const now = Math.floor(Date.now() / HOUR_MS);
  const hours = chartHours(usage, range, now);
  const max = Math.max(1, ...hours.map(([, v]) => v.passed + v.rejected));
  const bw = (W - L) / hours.length;
  const y = (v) => T + (H - B - T) * (1 - v / max);
  svg.appendChild(svgEl("line", { x1: L, y1: H - B, x2: W, y2: H - B, stroke: "#8c959f" }));
  svgText(svg, L - 6, T + 10, "end", String(max));
  svgText(svg, L - 6, H - B, "end", "0");
  hours.forEach(([h, v], i) => {
    if (v.passed + v.rejected > 0) svg.appendChild(bar(h, v, L + i * bw, Math.max(1, bw - (bw > 4 ? 1 : 0)), y));
  });
  hourLabel(svg, now - range + 1, L, "start");
  hourLabel(svg, now, W, "end");
  summarise(hours, range);
}
