// The console's charts: the broker's sampled history (Admin.GetHistory) drawn with uPlot
// (vendored, global `uPlot`). Each chart keeps its caption ("now: …") and a data attribute with
// the number of points, so that a person and a test read the same thing.

/* global uPlot */

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

/**
 * Draws (or redraws) a time chart in `container`.
 * `series` is a list of { label, values } over the shared `times` (ms since the epoch);
 * a null value is a gap (Redis could not tell).
 */
export function timeChart(container, { title, times, series, unit }) {
  // uPlot listens on the window: let the previous drawing go before the next.
  if (container.plot) container.plot.destroy();
  container.plot = null;
  container.replaceChildren();
  container.classList.add("chart");
  container.dataset.points = String(times.length);
  const heading = document.createElement("h4");
  heading.textContent = title;
  const caption = document.createElement("p");
  caption.className = "chart-now";
  container.append(heading, caption);
  if (times.length === 0) {
    caption.textContent = "no samples yet: the broker samples every interval";
    return;
  }
  series.forEach((s, i) => {
    const values = s.values;
    const item = document.createElement("span");
    item.className = "chart-series";
    item.style.color = COLORS[i % COLORS.length];
    item.textContent = `${s.label} now: ${formatValue(values[values.length - 1], unit)}`;
    item.dataset.series = s.label;
    caption.append(item);
  });
  const plot = document.createElement("div");
  container.append(plot);
  const width = Math.max(280, container.clientWidth - 16);
  container.plot = new uPlot(
    {
      width,
      height: 170,
      legend: { show: false },
      scales: { x: { time: true } },
      axes: [{}, { size: 60 }],
      series: [
        {},
        ...series.map((s, i) => ({
          label: s.label,
          stroke: COLORS[i % COLORS.length],
          width: 2,
          spanGaps: false,
          points: { show: times.length < 60 },
        })),
      ],
    },
    [times.map((t) => t / 1000), ...series.map((s) => s.values)],
    plot,
  );
}

function formatValue(value, unit) {
  if (value === null || value === undefined) return "unknown";
  const rounded = Math.abs(value) >= 100 ? Math.round(value) : Math.round(value * 10) / 10;
  return unit ? `${rounded} ${unit}` : String(rounded);
}
