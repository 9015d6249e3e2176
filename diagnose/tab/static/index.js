// The diagnose tab: asks the plugin's routes what to show for a run, a probe or a sweep, and draws it with uPlot
// (vendored, see VENDORED.md). Every number, band and reference line comes from the routes; this page only draws:
// every point, no smoothing, the axes' ranges from all the data. TensorBoard loads this module into an iframe whose
// <base> is the plugin's route prefix, so "targets" is /data/plugin/diagnose/targets.
import uPlot from "./uPlot.esm.js";

// Tableau 10: a colour per group (a kind of layer, a layer, a job, a series of a sweep), the same group the same
// colour in every chart of a view
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
                 "#17becf"];
const REFERENCE = "#9e9e9e";  // a level to read against (chance), not data
const SCALES = {linear: {distr: 1}, log: {distr: 3, log: 10}, log2: {distr: 3, log: 2}};
const HEIGHT = 260;
const WHOLE = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000];  // x ticks

// what was drawn, for tests and the benchmark: each chart's title and uPlot instance, and when drawing finished
window.diagnose = {charts: [], drawnMs: null, target: null};

export async function render() {
  for (const file of ["uPlot.min.css", "tab.css"]) {
    const link = Object.assign(document.createElement("link"), {rel: "stylesheet",
                                                                href: new URL(file, import.meta.url).href});
    document.head.append(link);
  }
  document.body.innerHTML = `<header><b>diagnose</b> <select id="target"></select> <span id="status"></span></header>
    <main id="view"></main>`;
  const found = await getJSON("targets");
  const select = document.getElementById("target");
  if (!found.targets.length) {
    document.getElementById("view").textContent = "No diagnose run under this logdir yet (no metrics.json).";
    return;
  }
  for (const target of found.targets) {
    const option = new Option((target.sweep ? "\u2003\u2514 " : "") + target.label, target.id);
    select.append(option);
  }
  const asked = new URLSearchParams(location.search).get("target");
  select.value = found.targets.some(t => t.id === asked) ? asked : found.default;
  select.addEventListener("change", () => show(select.value));
  await show(select.value);
}

async function getJSON(route) {
  const response = await fetch(route);
  if (!response.ok) throw new Error(`${route}: ${response.status} ${await response.text()}`);
  return response.json();
}

let showing = 0;  // the latest target asked for: a slower answer for an earlier one is dropped

async function show(id) {
  const asked = ++showing;
  const started = performance.now();
  const view = document.getElementById("view");
  const status = document.getElementById("status");
  status.textContent = "loading\u2026";
  delete document.body.dataset.drawn;  // set again once this target is drawn: what tests and screenshots wait for
  for (const chart of window.diagnose.charts) chart.u.destroy();
  window.diagnose = {charts: [], drawnMs: null, target: id};
  const query = "?target=" + encodeURIComponent(id);
  let findings, depth, batch, steps;
  try {
    [findings, depth, batch, steps] = await Promise.all(
      ["findings", "depth", "batch", "steps"].map(route => getJSON(route + query)));
  } catch (error) {
    if (asked === showing) status.textContent = String(error);
    return;
  }
  if (asked !== showing) return;
  const fetched = performance.now();
  view.innerHTML = "";
  const colours = new Map();
  const colour = group => {
    if (!colours.has(group)) colours.set(group, PALETTE[colours.size % PALETTE.length]);
    return colours.get(group);
  };
  findingsSection(view, findings);
  depthSection(view, depth, colour);
  if (batch.length) chartsSection(view, "Against batch size", batch, colour);
  if (steps.length) chartsSection(view, "Over steps", steps, colour);
  const drawn = performance.now();
  window.diagnose.fetchMs = fetched - started;
  window.diagnose.drawnMs = drawn - started;
  status.textContent = "";
  document.body.dataset.drawn = id;
}

function section(view, title) {
  const element = document.createElement("section");
  element.innerHTML = `<h2>${escape(title)}</h2>`;
  view.append(element);
  return element;
}

function kind(text) {  // a severity or status as a class name: letters only
  return String(text ?? "").replace(/[^A-Za-z_-]/g, "");
}

function escape(text) {
  const span = document.createElement("span");
  span.textContent = text ?? "";
  return span.innerHTML;
}

// ---- findings

function findingsSection(view, findings) {
  const element = section(view, "Findings");
  for (const run of findings.unfinished) {  // a run that did not complete says so first, and why
    const item = document.createElement("div");
    item.className = "finding";
    item.innerHTML = `<span class="severity ${run.status === "interrupted" ? "warning" : "error"}">` +
      `${escape(run.status)}</span> <span class="message">${run.job ? "job " + escape(run.job) + ": " : ""}` +
      `${escape(run.why)}</span>`;
    element.append(item);
  }
  if (!findings.own.length && !findings.jobs.length && !findings.unfinished.length) {
    element.append(note(findings.sweep_file ? "None." : "The sweep has no findings.json yet (still running?)."));
  }
  const list = document.createElement("div");
  for (const finding of findings.own) list.append(findingItem(finding));
  element.append(list);
  if (findings.jobs.length) {
    const heading = document.createElement("h3");
    heading.textContent = "The jobs' findings, by rule";
    element.append(heading);
    for (const group of findings.jobs) {
      const details = document.createElement("details");
      details.open = group.jobs.length <= 3;  // more: one line says it, with the first job's words
      const jobs = group.jobs.map(j => j.job);
      details.innerHTML = `<summary><span class="severity ${kind(group.severity)}">${escape(group.severity)}</span>
        <code>${escape(group.rule)}</code> in ${jobs.length} of ${findings.job_count} jobs:
        ${escape(jobs.slice(0, 4).join("; "))}${jobs.length > 4 ? "; \u2026" : ""}
        ${details.open ? "" : `<div class="example">e.g. ${escape(group.jobs[0].finding.message)}</div>`}</summary>`;
      for (const job of group.jobs) details.append(findingItem(job.finding, job.job));
      element.append(details);
    }
  }
}

function findingItem(finding, job) {
  const item = document.createElement("div");
  item.className = "finding";
  const where = [job && `job ${job}`, finding.layer && `layer ${finding.layer}`,
                 finding.step != null && `step ${finding.step}`].filter(Boolean).join(" \u00b7 ");
  item.innerHTML = `<span class="severity ${kind(finding.severity)}">${escape(finding.severity)}</span>
    <span class="message">${escape(finding.message)}</span>
    ${finding.remedy ? `<div class="remedy">\u2192 ${escape(finding.remedy)}</div>` : ""}
    <div class="where"><code>${escape(finding.rule)}</code>${where ? " \u00b7 " + escape(where) : ""}</div>`;
  return item;
}

function note(text) {
  const element = document.createElement("p");
  element.className = "note";
  element.textContent = text;
  return element;
}

// ---- charts

function grid(parent) {
  const element = document.createElement("div");
  element.className = "grid";
  parent.append(element);
  return element;
}

function chartsSection(view, title, charts, colour) {
  const element = section(view, title);
  const cells = grid(element);
  for (const chart of charts) lineChart(cells, chart, colour);
}

function format(value) {  // a value on hover: 4 significant digits
  if (value == null || Number.isNaN(value)) return "\u2013";
  const size = Math.abs(value);
  return size !== 0 && (size < 1e-3 || size >= 1e5) ? value.toExponential(2) : String(+value.toPrecision(4));
}

function tick(value) {  // an axis' tick: as short as it goes (1e-4, 2e-4, 0.01, 5000)
  if (value == null) return "";
  const size = Math.abs(value);
  if (size !== 0 && (size < 1e-3 || size >= 1e5)) {
    const [mantissa, exponent] = value.toExponential().split("e");
    return `${+(+mantissa).toPrecision(2)}e${exponent.replace("+", "")}`;
  }
  return String(+value.toPrecision(3));
}

function onLog(values, scale) {  // a log axis has no place for 0 or below
  return scale === "linear" ? values : values.map(v => (v != null && v > 0 ? v : null));
}

function unplaced(values, scale) {  // how many values a log axis leaves out
  return scale === "linear" ? 0 : values.filter(v => v != null && !(v > 0)).length;
}

function unplacedNote(count, overflowed) {
  const notes = [];
  if (overflowed) notes.push(`${overflowed} value${overflowed > 1 ? "s are" : " is"} not finite (inf or NaN: the ` +
                             "signal overflowed), not drawn");
  if (count) notes.push(`${count} value${count > 1 ? "s" : ""} of 0 or below (a zero init's std, a dead layer's ` +
                        "gradient) cannot be drawn on this log axis");
  return notes.join("; ");
}

function yRange(scale, values) {
  const finite = values.filter(v => v != null && Number.isFinite(v) && (scale === "linear" || v > 0));
  if (!finite.length) return undefined;
  let low = Math.min(...finite), high = Math.max(...finite);
  if (scale !== "linear") return (u) => uPlot.rangeLog(low, high, 10, false);
  if (low === high) { low -= Math.abs(low) * 0.1 || 1; high += Math.abs(high) * 0.1 || 1; }
  const pad = (high - low) * 0.05;
  return () => [low - pad, high + pad];
}

function cell(parent, chart) {
  const element = document.createElement("div");
  element.className = "chart";
  element.innerHTML = `<h4>${escape(chart.title)}</h4>`;
  parent.append(element);
  return element;
}

function widthOf(element) {
  return Math.max(320, element.clientWidth - 4);
}

// A chart of series with their own x values, drawn on one x axis: uPlot wants every series on the same x values,
// so the x values are joined and each series has null where it has no point (lines span the gaps).
function lineChart(parent, chart, colour) {
  const element = cell(parent, chart);
  const xs = [...new Set(chart.series.flatMap(s => s.x))].sort((a, b) => a - b);
  const at = new Map(xs.map((x, i) => [x, i]));
  const data = [xs];
  const series = [{label: chart.x_label.split(" (")[0], value: (u, v) => format(v)}];
  const bands = [];
  for (const s of chart.series) {
    const place = values => {
      const row = new Array(xs.length).fill(null);
      s.x.forEach((x, i) => { row[at.get(x)] = values[i]; });
      return onLog(row, chart.y_scale);
    };
    const stroke = s.reference ? REFERENCE : colour(s.group);
    const nameAt = s.names ? new Map(s.x.map((x, i) => [x, s.names[i]])) : null;
    const named = (u, v, si, i) => (v == null ? "\u2013" : format(v) +
                                    (nameAt && i != null && nameAt.has(xs[i]) ? ` (${nameAt.get(xs[i])})` : ""));
    series.push({label: s.label, stroke, width: s.reference ? 1.5 : 2, dash: s.dash ? [7, 5] : undefined,
                 spanGaps: true,
                 // a lone point (one evaluation) drawn large; a second reading (dashed) hollow
                 points: {show: !s.reference, size: s.x.length === 1 ? 11 : s.dash ? 5 : 6,
                          fill: s.dash ? "#fff" : stroke},
                 value: named});
    data.push(place(s.y));
    if (s.low && s.high) {
      const index = data.length;
      for (const [bound, values] of [["max", s.high], ["min", s.low]]) {
        series.push({label: `${s.label} (${bound} over seeds)`, stroke: stroke + "66", width: 1, spanGaps: true,
                     points: {show: false}, value: (u, v) => format(v)});
        data.push(place(values));
      }
      bands.push({series: [index, index + 1], fill: stroke + "26"});
    }
  }
  const marks = chart.marks || [];
  const xValues = [...xs, ...marks.map(m => m.x)].filter(v => chart.x_scale === "linear" || v > 0);
  const yValues = data.slice(1).flat();
  const options = {
    width: widthOf(element), height: HEIGHT, series, bands,
    scales: {x: {...SCALES[chart.x_scale], time: false, range: xRange(chart.x_scale, xValues)},
             y: {...SCALES[chart.y_scale], range: chart.y_range ? () => chart.y_range : yRange(chart.y_scale, yValues)}},
    axes: [{label: chart.x_label, values: (u, ticks) => ticks.map(tick),
            incrs: chart.x_scale === "linear" && xs.every(Number.isInteger) ? WHOLE : undefined},
           {label: chart.y_label, size: 60, values: (u, ticks) => ticks.map(tick)}],
    legend: {live: true},
    cursor: {focus: {prox: 16}},
    focus: {alpha: 0.35},
    hooks: {draw: [u => drawMarks(u, marks, colour)]},
  };
  const u = new uPlot(options, data, element);
  window.diagnose.charts.push({title: chart.title, u, spec: chart});
  if (marks.length) element.append(note(marks.map(m => `${m.style === "dotted" ? "dotted" : "dashed"}: ${m.label}`)
                                        .join("; ")));
  if (chart.note) element.append(note(chart.note));
  const left = unplacedNote(chart.series.reduce((n, s) => n + unplaced(s.y, chart.y_scale), 0), chart.not_finite);
  if (left) element.append(note(left));
  return u;
}

function xRange(scale, values) {
  if (!values.length) return undefined;
  const low = Math.min(...values), high = Math.max(...values);
  if (scale === "log2") return () => uPlot.rangeLog(low, high, 2, true);
  if (scale === "log") return () => uPlot.rangeLog(low, high, 10, true);
  return low === high ? () => [low - 1, high + 1] : () => [low, high];
}

function drawMarks(u, marks, colour) {
  const ctx = u.ctx;
  for (const mark of marks) {
    const x = u.valToPos(mark.x, "x", true);
    if (!(x >= u.bbox.left && x <= u.bbox.left + u.bbox.width)) continue;
    ctx.save();
    ctx.strokeStyle = colour(mark.group);
    ctx.lineWidth = 1.5 * devicePixelRatio;
    ctx.setLineDash(mark.style === "dotted" ? [2, 4] : [8, 5]);
    ctx.beginPath();
    ctx.moveTo(x, u.bbox.top);
    ctx.lineTo(x, u.bbox.top + u.bbox.height);
    ctx.stroke();
    ctx.restore();
  }
}

// ---- the depth profile

function depthSection(view, depth, colour) {
  const element = section(view, "Depth profile");
  if (depth.profile) return profileCharts(element, depth.profile, colour);
  if (!depth.charts.length) {
    element.append(note("No per-layer statistics here (diag=off or diag.every=0, or a run that stopped before its "+
                        "first measurement)."));
    return;
  }
  const cells = grid(element);
  for (const chart of depth.charts) lineChart(cells, chart, colour);
}

// A run's profile at the step a slider picks, over the profile at initialisation (dashed); the y range covers
// every measured step, so a line moves against fixed axes as the slider moves.
function profileCharts(element, profile, colour) {
  const last = profile.steps.length - 1;
  const controls = document.createElement("div");
  controls.className = "slider";
  controls.innerHTML = `<label>step <input type="range" min="0" max="${last}" value="${last}" step="1"></label>
    <span class="at"></span>`;
  element.append(controls);
  const slider = controls.querySelector("input");
  const at = controls.querySelector(".at");
  const cells = grid(element);
  const drawn = [];
  for (const panel of profile.panels) {
    const depths = Math.max(...panel.lines.map(line => line.layers.length));
    const xs = Array.from({length: depths}, (_, i) => i + 1);
    const pad = values => onLog([...values, ...new Array(depths - values.length).fill(null)], panel.y_scale);
    const rows = k => [xs, ...panel.lines.flatMap(line => [pad(line.values[k]), pad(line.values[0])])];
    const series = [{label: "depth", value: (u, v) => (v == null ? "\u2013" : String(v))}];
    for (const line of panel.lines) {
      const stroke = colour(line.group);
      const named = (u, v, si, i) => (v == null ? "\u2013" : `${format(v)} (${line.layers[i] ?? ""})`);
      series.push({label: line.label, stroke, width: 2, points: {show: true, size: 6}, spanGaps: true,
                   value: named});
      series.push({label: `${line.label} at initialisation`, stroke, width: 1.5, dash: [7, 5], spanGaps: true,
                   points: {show: false}, value: named});
    }
    const all = panel.lines.flatMap(line => line.values.flat());
    const element = cell(cells, {title: panel.title});
    const u = new uPlot({
      width: widthOf(element), height: HEIGHT, series,
      scales: {x: {time: false, range: () => [0.5, depths + 0.5]}, y: {...SCALES[panel.y_scale],
                                                                          range: yRange(panel.y_scale, all)}},
      axes: [{label: "depth (layer of its kind, input to output)", incrs: WHOLE},
             {label: panel.metric, size: 60, values: (u, ticks) => ticks.map(tick)}],
      legend: {live: true},
      cursor: {focus: {prox: 16}},
      focus: {alpha: 0.35},
    }, rows(last), element);
    window.diagnose.charts.push({title: panel.title, u, spec: panel});
    const left = element.appendChild(note(""));
    const count = k => unplacedNote(panel.lines.reduce((n, line) => n + unplaced(line.values[k], panel.y_scale), 0),
                                    panel.not_finite[k]);
    drawn.push([u, rows, left, count]);
  }
  const describe = k => {
    const epoch = profile.epochs[k];
    at.textContent = `${profile.steps[k]} of ${profile.steps[last]} (epoch ${format(epoch)})` +
      ` \u2014 dashed: initialisation (step ${profile.steps[0]})`;
  };
  const move = k => {
    for (const [u, rows, left, count] of drawn) {
      u.setData(rows(k), false);
      left.textContent = count(k);
    }
    describe(k);
  };
  move(last);
  slider.addEventListener("input", () => move(Number(slider.value)));
}
