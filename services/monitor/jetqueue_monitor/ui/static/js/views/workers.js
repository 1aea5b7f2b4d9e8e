// Workers: every worker's last heartbeat, refreshed on the stream's ticks.

import * as api from '../api.js';
import { h, fill } from '../dom.js';
import { t, num, ago, when, span, queueLabel } from '../i18n.js';
import { patch } from '../router.js';
import { link, workerChip, td, errorText } from '../widgets.js';

const REFRESH_MS = 4000;
const STATUSES = ['ONLINE', 'DEGRADED', 'OFFLINE'];

export function workersView(ctx, params) {
  let p = { ...params };
  const el = h('div', { class: 'view view-workers', 'data-view': 'workers' });
  const bar = h('div', { class: 'filters-wrap' });
  const listWrap = h('div', { class: 'table-wrap', 'data-role': 'workers-list' });
  el.append(bar, listWrap);
  let workers = null;
  let fetchedAt = 0;
  let lastKey = '';

  const fetchWorkers = api.newest(() => api.get('/workers'),
    (got) => { workers = got; render(); },
    (err) => fill(listWrap, h('p', { class: 'bad' }, errorText(err))));
  function load() {
    fetchedAt = Date.now();
    return fetchWorkers();
  }

  function renderBar() {
    const qs = ctx.state.queues;
    const mk = (key, label, options) => {
      const sel = h('select', { id: `w-${key}`, class: 'input', 'data-filter': key },
        h('option', { value: '' }, t('all')), options.map(([v, l]) => h('option', { value: v, selected: p[key] === v }, l)));
      sel.addEventListener('change', () => patch({ [key]: sel.value || null }));
      return h('label', { class: 'field', for: `w-${key}` }, h('span', {}, label), sel);
    };
    const options = qs.map((q) => [q.name, `${queueLabel(q)} (${q.name})`]);
    if (p.queue && !qs.some((q) => q.name === p.queue)) options.push([p.queue, p.queue]);
    fill(bar, h('form', { class: 'filters', 'data-role': 'filters', onsubmit: (ev) => ev.preventDefault() },
      mk('queue', t('filter_queue'), options),
      mk('status', t('filter_status'), STATUSES.map((s) => [s, t(`ws_${s}`)])),
      p.queue || p.status ? h('button', { type: 'button', class: 'btn btn-ghost', 'data-role': 'clear', onclick: () => patch({ queue: null, status: null }) }, t('clear_filters')) : null));
  }

  function render(force = false) {
    if (!workers) return;
    const rows = workers.filter((w) => (!p.queue || w.queue === p.queue) && (!p.status || w.status === p.status));
    const key = JSON.stringify([rows, ctx.state.queues.length, Math.floor(Date.now() / 10000)]);
    if (!force && key === lastKey) return;
    lastKey = key;
    const byName = Object.fromEntries(ctx.state.queues.map((q) => [q.name, q]));
    if (!rows.length) {
      fill(listWrap, h('div', { class: 'empty', 'data-role': 'empty' }, h('p', {}, t('no_workers'))));
      return;
    }
    const cols = ['col_status', 'col_worker', 'col_queue', 'col_host', 'col_pid', 'col_version', 'col_active', 'col_processed', 'col_failed', 'col_heartbeat', 'col_uptime'];
    fill(listWrap, h('table', { class: 'table table-workers', 'data-role': 'workers-table' },
      h('thead', {}, h('tr', {}, cols.map((k) => h('th', { scope: 'col', class: ['col_pid', 'col_active', 'col_processed', 'col_failed'].includes(k) ? 'num' : null }, t(k))))),
      h('tbody', {}, rows.map((w) => h('tr', { 'data-worker': w.worker_id, 'data-status': w.status, class: `wstatus-${w.status}` },
        td(t('col_status'), workerChip(w.status), { class: 'cell-status' }),
        td(t('col_worker'), h('span', { class: 'mono wid' }, w.worker_id), { class: 'cell-title' }),
        td(t('col_queue'), link('queues', { queue: w.queue }, {}, byName[w.queue] ? queueLabel(byName[w.queue]) : w.queue), { class: 'span-2' }),
        td(t('col_host'), w.hostname || '–', { class: 'mono' }),
        td(t('col_pid'), w.pid ?? '–', { class: 'num mono' }),
        td(t('col_version'), w.version || '–', { class: 'mono' }),
        td(t('col_active'), `${num(w.active_jobs)}${w.concurrency ? ` / ${num(w.concurrency)}` : ''}`, { class: 'num' }),
        td(t('col_processed'), num(w.processed_jobs), { class: 'num' }),
        td(t('col_failed'), num(w.failed_jobs), { class: `num${w.failed_jobs ? ' bad' : ''}` }),
        td(t('col_heartbeat'), h('span', { title: when(w.last_heartbeat) }, ago(w.last_heartbeat)), { class: 'span-2' }),
        td(t('col_uptime'), span(w.uptime_s), { class: 'span-2' }))))));
  }

  renderBar();
  fill(listWrap, h('p', { class: 'muted loading' }, '…'));
  load();
  return {
    el,
    route(next) { p = { ...next }; renderBar(); render(true); },
    tick() {
      if (!bar.querySelector('#w-queue option:nth-child(2)') && ctx.state.queues.length) renderBar();
      if (Date.now() - fetchedAt > REFRESH_MS) load();
      else render(); // redraws only if something changed (e.g. the queue labels just arrived)
    },
    destroy() { fetchWorkers.drop(); },
  };
}
