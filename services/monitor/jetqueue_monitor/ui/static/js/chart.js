// A queue's trends as inline SVG (no chart library): the last hour from the `trend` samples, 24 h and 7 d from `history`.

import { h, s } from './dom.js';
import { t, num, clock, when } from './i18n.js';

const W = 600;
const H = 120;
const BUCKETS = 120; // 30-second buckets over a full hour
const RATE_BARS = 30;
const SERIES = [
  { key: 'waiting', label: () => t('col_waiting'), cls: 'series-waiting', area: true },
  { key: 'active', label: () => t('col_active'), cls: 'series-active' },
  { key: 'delayed', label: () => t('col_delayed'), cls: 'series-delayed' },
  { key: 'dlq', label: () => t('col_failed'), cls: 'series-failed' },
];

/** 1, 2, 5 × 10^k at or above n. */
function niceMax(n) {
  if (n <= 1) return 1;
  const p = 10 ** Math.floor(Math.log10(n));
  for (const m of [1, 2, 5, 10]) if (m * p >= n) return m * p;
  return 10 * p;
}

/** Per bucket, the highest value of each series (a spike must not vanish in the averaging). */
function bucketize(trend, start, end) {
  const size = (end - start) / BUCKETS;
  const out = new Array(BUCKETS).fill(null);
  for (const p of trend) {
    const at = Date.parse(p.ts);
    if (Number.isNaN(at) || at < start || at > end) continue;
    const i = Math.min(BUCKETS - 1, Math.floor((at - start) / size));
    const b = out[i] || (out[i] = { waiting: 0, active: 0, delayed: 0, dlq: 0 });
    for (const { key } of SERIES) b[key] = Math.max(b[key], p[key] || 0);
  }
  return out;
}

/** Completed jobs per minute in each of `n` slices, from the cumulative `completed_total` counter. */
function rates(trend, start, end, n) {
  const size = (end - start) / n;
  const last = new Array(n).fill(null);
  let before = null;
  for (const p of trend) {
    const at = Date.parse(p.ts);
    if (p.completed_total === null || p.completed_total === undefined || Number.isNaN(at)) continue;
    if (at < start) { before = p.completed_total; continue; }
    last[Math.min(n - 1, Math.floor((at - start) / size))] = p.completed_total;
  }
  const out = [];
  let prev = before;
  for (const v of last) {
    if (v === null) { out.push(null); continue; }
    out.push(prev === null ? null : (Math.max(0, v - prev) * 60_000) / size);
    prev = v;
  }
  return out;
}

export function trendChart(trend) {
  if (!trend || trend.length === 0) {
    return h('p', { class: 'muted chart-empty' }, t('trend_empty'));
  }
  // The last hour; a monitor that started recently shows the history it has, across the full width.
  const end = Date.parse(trend[trend.length - 1].ts);
  const start = Math.max(end - 3600_000, Math.min(Date.parse(trend[0].ts), end - 10_000));
  const buckets = bucketize(trend, start, end);
  const top = niceMax(Math.max(1, ...buckets.filter(Boolean).flatMap((b) => SERIES.map(({ key }) => b[key]))));
  const x = (i) => ((i + 0.5) / BUCKETS) * W;
  const y = (v) => H - (v / top) * (H - 4) - 2;

  const svg = s('svg', {
    viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', class: 'chart', role: 'img', 'data-role': 'trend',
    'aria-label': `${t('trend_title')}: ${SERIES.map((se) => `${se.label()} ${num(trend[trend.length - 1][se.key])}`).join(', ')}`,
  });
  for (const f of [0.25, 0.5, 0.75]) svg.append(s('line', { x1: 0, x2: W, y1: H * f, y2: H * f, class: 'grid' }));
  for (const se of SERIES) {
    const pts = [];
    buckets.forEach((b, i) => { if (b) pts.push([x(i), y(b[se.key])]); });
    if (pts.length === 0) continue;
    if (pts.length === 1) pts.unshift([Math.max(0, pts[0][0] - 4), pts[0][1]]);
    const line = pts.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(' ');
    if (se.area) {
      svg.append(s('polygon', { points: `${pts[0][0].toFixed(1)},${H} ${line} ${pts[pts.length - 1][0].toFixed(1)},${H}`, class: `${se.cls} area` }));
    }
    svg.append(s('polyline', { points: line, class: `${se.cls} line`, 'vector-effect': 'non-scaling-stroke', 'data-series': se.key }));
  }

  const perMin = rates(trend, start, end, RATE_BARS);
  const rateTop = niceMax(Math.max(1, ...perMin.filter((v) => v !== null)));
  const bars = s('svg', { viewBox: `0 0 ${W} 40`, preserveAspectRatio: 'none', class: 'chart chart-bars', 'aria-hidden': 'true' });
  perMin.forEach((v, i) => {
    if (!v) return;
    const bh = Math.max(1, (v / rateTop) * 38);
    bars.append(s('rect', { x: (i / RATE_BARS) * W + 1, y: 40 - bh, width: W / RATE_BARS - 2, height: bh, class: 'bar' }));
  });

  const latest = trend[trend.length - 1];
  return h(
    'figure', { class: 'trend' },
    h('div', { class: 'chart-frame' },
      h('span', { class: 'axis axis-top' }, num(top)),
      h('span', { class: 'axis axis-zero' }, '0'),
      svg),
    h('div', { class: 'axis-x' }, h('span', {}, clock(new Date(start).toISOString())), h('span', {}, clock(latest.ts))),
    h('figcaption', { class: 'legend' },
      SERIES.map((se) => h('span', { class: 'legend-item' }, h('i', { class: `swatch ${se.cls}` }), se.label(), ' ', h('b', {}, num(latest[se.key]))))),
    // Shown once the samples carry a moving completed_total counter.
    perMin.some((v) => v) ? [h('div', { class: 'bars-head muted' }, t('throughput_title'), h('span', {}, `${num(rateTop)}/min`)), bars] : null,
  );
}

/**
 * 24 hours or 7 days of finished attempts, one stacked bar per hour (completed below, failed and retried
 * above), from the API's `history` (the hourly rollups). Hours without a row are empty.
 */
export function historyChart(history, windowKey) {
  const hours = windowKey === '7d' ? 7 * 24 : 24;
  const end = Math.floor(Date.now() / 3600_000) * 3600_000; // the current hour
  const start = end - (hours - 1) * 3600_000;
  const byHour = new Map((history || []).map((p) => [Math.floor(Date.parse(p.ts) / 3600_000) * 3600_000, p]));
  const points = Array.from({ length: hours }, (_, i) => byHour.get(start + i * 3600_000) || null);
  const bad = (p) => (p ? p.failed + p.retried : 0);
  const top = niceMax(Math.max(1, ...points.map((p) => (p ? p.completed + bad(p) : 0))));
  const w = W / hours;
  const svg = s('svg', {
    viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', class: 'chart', role: 'img', 'data-role': 'history',
    'data-window': windowKey, 'aria-label': t('history_title'),
  });
  for (const f of [0.25, 0.5, 0.75]) svg.append(s('line', { x1: 0, x2: W, y1: H * f, y2: H * f, class: 'grid' }));
  points.forEach((p, i) => {
    if (!p) return;
    const ok = (p.completed / top) * (H - 4);
    const no = (bad(p) / top) * (H - 4);
    const x = i * w + Math.min(1, w * 0.1);
    const bw = Math.max(w - 2 * Math.min(1, w * 0.1), 0.5);
    if (ok > 0) svg.append(s('rect', { x, y: H - ok, width: bw, height: ok, class: 'bar', 'data-series': 'completed' }));
    if (no > 0) svg.append(s('rect', { x, y: H - ok - no, width: bw, height: no, class: 'bar bar-bad', 'data-series': 'failed' }));
  });
  const sum = (f) => points.reduce((n, p) => n + (p ? f(p) : 0), 0);
  return h('figure', { class: 'trend' },
    h('div', { class: 'chart-frame' }, h('span', { class: 'axis axis-top' }, num(top)), h('span', { class: 'axis axis-zero' }, '0'), svg),
    h('div', { class: 'axis-x' }, h('span', {}, when(new Date(start).toISOString())), h('span', {}, when(new Date(end).toISOString()))),
    h('figcaption', { class: 'legend' },
      h('span', { class: 'legend-item' }, h('i', { class: 'swatch series-active' }), t('kpi_completed', { n: num(sum((p) => p.completed)) })),
      h('span', { class: 'legend-item' }, h('i', { class: 'swatch series-failed' }), `${t('col_failed')} ${num(sum(bad))}`)));
}
