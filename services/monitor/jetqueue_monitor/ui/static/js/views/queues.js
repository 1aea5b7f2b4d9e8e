// Queues: the table (live from the stream) and a queue's detail panel with trend, top errors and actions.

import * as api from '../api.js';
import { h, fill } from '../dom.js';
import { t, num, duration, ago, when, span, queueLabel } from '../i18n.js';
import { patch } from '../router.js';
import { link, queueChip, td, toast, errorText } from '../widgets.js';
import { trendChart, historyChart } from '../chart.js';
import { drawer } from '../drawer.js';
import { confirmDialog, dangerDialog } from '../dialogs.js';

/** A pause with an end time; an open-ended pause is stored as one ending in a hundred years. */
function pausedUntil(q) {
  return q.paused && q.pause_until && Date.parse(q.pause_until) - Date.now() < 366 * 86400_000;
}

/** "RuntimeError: boom" shown next to its type reads "boom". */
function withoutType(message, type) {
  const m = message || '';
  return type && m.startsWith(`${type}: `) ? m.slice(type.length + 2) : m;
}

function onlineWorkers(q) {
  return Object.entries(q.workers || {}).reduce((n, [st, c]) => (st === 'OFFLINE' ? n : n + c), 0);
}

function queueTable(queues, selected) {
  const head = ['col_queue', 'col_status', 'col_waiting', 'col_active', 'col_delayed', 'col_failed', 'col_throughput', 'col_workers', 'col_last_processed'];
  const num_ = 'num';
  return h('table', { class: 'table table-queues', 'data-role': 'queues-table' },
    h('thead', {}, h('tr', {}, head.map((k, i) => h('th', { scope: 'col', class: i >= 2 && i <= 7 ? num_ : null }, t(k))))),
    h('tbody', {}, queues.map((q) => {
      const workers = onlineWorkers(q);
      const row = h('tr', {
        'data-queue': q.name, class: `row-click status-${q.status}${q.name === selected ? ' selected' : ''}`,
        onclick: (ev) => { if (!ev.target.closest('a')) patch({ queue: q.name }); },
      },
        td(t('col_queue'), h('div', { class: 'qname' },
          link('queues', { queue: q.name }, { class: 'qlabel', 'data-role': 'open-queue' }, queueLabel(q)),
          h('span', { class: 'qkey mono muted' }, q.name)), { class: 'cell-title' }),
        td(t('col_status'), h('span', { class: 'status-cell' }, queueChip(q.status),
          pausedUntil(q) ? h('span', { class: 'muted small' }, ` ${t('paused_until', { t: when(q.pause_until) })}`) : null), { class: 'cell-status' }),
        td(t('col_waiting'), num(q.waiting), { class: `num${q.waiting && !workers && !q.paused ? ' warn' : ''}` }),
        td(t('col_active'), num(q.active), { class: num_ }),
        td(t('col_delayed'), num(q.delayed), { class: num_ }),
        td(t('col_failed'), num(q.failed), { class: `num${q.failed ? ' bad' : ''}` }),
        td(t('col_throughput'), t('per_min', { n: num(q.jobs_per_min) }), { class: num_ }),
        td(t('col_workers'), num(workers), { class: `num${workers ? '' : ' muted'}` }),
        td(t('col_last_processed'), h('span', { title: when(q.last_processed_at) }, ago(q.last_processed_at)), { class: 'span-2' }));
      return row;
    })));
}

function stat(label, value, cls, sub) {
  return h('div', { class: `stat ${cls || ''}` }, h('span', { class: 'stat-label' }, label), h('span', { class: 'stat-value' }, value),
    sub ? h('span', { class: 'stat-sub muted small' }, sub) : null);
}

/** Waiting jobs per priority level ("P0 2 · P1 5 · P2 0"), when the queue has levels. */
function byLevel(q) {
  const levels = q.waiting_by_level || [];
  return levels.length > 1 ? levels.map((n, i) => `P${i} ${num(n)}`).join(' · ') : null;
}

/** The detail panel of one queue. */
function queuePanel(name, ctx) {
  const d = drawer({ kind: 'queue', label: name, onClose: () => patch({ queue: null }) });
  const content = h('div', { 'data-role': 'queue-detail' });
  const actions = h('section', { class: 'panel-section actions', 'data-role': 'queue-actions' });
  d.body.append(content, actions);
  let detail = null;
  let fetchedAt = 0;
  let lastKey = '';
  let windowKey = '1h'; // the trend's time range: the last hour (samples), or 24 h / 7 d (hourly rollups)

  const fetchDetail = api.newest(() => api.get(`/queues/${api.enc(name)}?window=${windowKey}`),
    (got) => { detail = got; render(); },
    (err) => fill(content, h('p', { class: 'bad' }, errorText(err))));
  function load() {
    fetchedAt = Date.now();
    return fetchDetail();
  }

  function windowSwitch() {
    return h('div', { class: 'seg', role: 'group', 'aria-label': t('filter_range'), 'data-role': 'trend-window' },
      ['1h', '24h', '7d'].map((w) => h('button', {
        type: 'button', class: 'seg-btn', 'aria-pressed': String(windowKey === w), 'data-window': w,
        onclick: () => { windowKey = w; lastKey = ''; load(); },
      }, t(`window_${w}`))));
  }

  function render() {
    const q = detail;
    const key = JSON.stringify([q, Math.floor(Date.now() / 30000)]);
    if (key === lastKey) return;
    const pausedChanged = !lastKey || JSON.parse(lastKey)[0].paused !== q.paused;
    lastKey = key;
    fill(d.title,
      h('h2', { id: 'queue-title' }, queueLabel(q)),
      h('div', { class: 'drawer-sub' }, h('span', { class: 'mono muted' }, q.name), ' ', queueChip(q.status)));
    const workers = onlineWorkers(q);
    const errors = q.top_errors || [];
    fill(content,
      h('p', { class: 'muted small meta' },
        pausedUntil(q) ? `${t('status_Paused')} ${t('paused_until', { t: when(q.pause_until) })} · ` : '',
        q.lag_seconds ? `${t('lag', { t: span(q.lag_seconds) })} · ` : '',
        `${t('col_workers')} ${num(workers)} · ${t('col_last_processed')} ${ago(q.last_processed_at)}`),
      h('div', { class: 'stats' },
        stat(t('col_waiting'), num(q.waiting), '', byLevel(q)), stat(t('col_active'), num(q.active)), stat(t('col_delayed'), num(q.delayed)),
        stat(t('col_failed'), num(q.failed), q.failed ? 'bad' : ''), stat(t('col_throughput'), t('per_min', { n: num(q.jobs_per_min) })),
        stat('avg / p95', `${duration(q.avg_duration_ms)} / ${duration(q.p95_duration_ms)}`, 'stat-small')),
      h('section', { class: 'panel-section' },
        h('div', { class: 'summary-head' }, h('h3', {}, windowKey === '1h' ? t('trend_title') : t('history_title')), windowSwitch()),
        windowKey === '1h' ? trendChart(q.trend) : historyChart(q.history, windowKey)),
      h('section', { class: 'panel-section' }, h('h3', {}, t('top_errors')),
        errors.length
          ? h('ol', { class: 'errors', 'data-role': 'top-errors' }, errors.map((e) => h('li', {},
            link('jobs', { queue: q.name, status: 'failed', q: (e.message || '').slice(0, 60) }, { class: 'err-link' },
              h('span', { class: 'err-count' }, num(e.count)),
              h('span', { class: 'err-type mono' }, e.type),
              h('span', { class: 'err-msg' }, withoutType(e.message, e.type))))))
          : h('p', { class: 'muted' }, t('no_errors'))),
      h('nav', { class: 'panel-links' },
        link('jobs', { queue: q.name }, { class: 'btn btn-small' }, t('view_jobs')),
        link('jobs', { queue: q.name, status: 'failed' }, { class: 'btn btn-small' }, t('view_failed')),
        link('workers', { queue: q.name }, { class: 'btn btn-small' }, t('view_workers'))));
    // The action buttons only change with the pause state: keep the "until" field the user is filling in.
    if (pausedChanged) renderActions();
    else actions.querySelectorAll('[data-needs-failed]').forEach((b) => { b.disabled = !q.failed; });
  }

  async function act(fn, okText) {
    try {
      const res = await fn();
      toast(okText(res));
    } catch (err) {
      toast(errorText(err), 'bad');
    }
    await Promise.all([load(), ctx.refresh().catch(() => {})]);
  }

  function renderActions() {
    const q = detail;
    if (!api.can('operator')) {
      fill(actions, h('h3', {}, t('actions')), h('p', { class: 'muted', 'data-role': 'no-actions' }, t('viewer_no_actions')));
      return;
    }
    const label = queueLabel(q);
    const until = h('input', { type: 'datetime-local', class: 'input', id: 'pause-until', 'data-role': 'pause-until' });
    // the reason goes into the audit log with the pause (or the resume)
    const reason = h('input', { type: 'text', class: 'input', id: 'pause-reason', 'data-role': 'pause-reason', maxlength: '500' });
    const why = () => (reason.value.trim() ? { reason: reason.value.trim() } : {});
    const pauseBtn = h('button', {
      type: 'button', class: 'btn', 'data-action': 'pause',
      onclick: () => act(() => api.post(`/queues/${api.enc(q.name)}/pause`, { ...why(), ...(until.value ? { until: new Date(until.value).toISOString() } : {}) }),
        () => t('paused_ok', { q: label })),
    }, t('pause'));
    const resumeBtn = h('button', {
      type: 'button', class: 'btn btn-primary', 'data-action': 'resume',
      onclick: () => act(() => api.post(`/queues/${api.enc(q.name)}/resume`, why()), () => t('resumed_ok', { q: label })),
    }, `▶ ${t('resume')}`);
    const reasonField = h('label', { class: 'field field-inline field-reason', for: 'pause-reason' }, h('span', {}, t('pause_reason')), reason);
    const retryBtn = h('button', {
      type: 'button', class: 'btn', 'data-action': 'retry-failed', 'data-needs-failed': '', disabled: !q.failed,
      onclick: async () => {
        const yes = await confirmDialog({ title: t('retry_failed'), message: t('confirm_retry_failed', { q: label, n: num(detail.failed) }), confirmLabel: t('retry_failed') });
        if (yes) await act(() => api.post(`/queues/${api.enc(q.name)}/retry-failed`), (r) => t('retried_ok', { n: num(r.retried) }));
      },
    }, `↻ ${t('retry_failed')}`);
    const rows = [
      q.paused
        ? h('div', { class: 'action-row' }, reasonField, resumeBtn)
        : h('div', { class: 'action-row' }, h('label', { class: 'field field-inline', for: 'pause-until' }, h('span', {}, t('pause_until')), until), reasonField, pauseBtn),
      h('div', { class: 'action-row' }, retryBtn),
    ];
    if (api.can('admin')) {
      const drainBtn = h('button', {
        type: 'button', class: 'btn btn-danger-outline', 'data-action': 'drain',
        onclick: async () => {
          const path = `/queues/${api.enc(q.name)}/drain`;
          const res = await dangerDialog({
            title: `${t('drain')}: ${label}`, what: t('drain_what', { q: `${label} (${q.name})` }), actionLabel: t('drain'),
            options: [{ kind: 'checkbox', key: 'include_delayed', label: t('include_delayed'), initial: false }],
            ask: (o) => api.del(path, { include_delayed: o.include_delayed }),
            run: (token, word, reason, o) => api.del(path, { token, confirm: word, reason, include_delayed: o.include_delayed }),
          });
          if (res) await act(async () => res, (r) => t('drained_ok', { n: num((r.removed || 0) + (r.removed_delayed || 0)) }));
        },
      }, t('drain'));
      const cleanBtn = h('button', {
        type: 'button', class: 'btn btn-danger-outline', 'data-action': 'clean',
        onclick: async () => {
          const path = `/queues/${api.enc(q.name)}/clean`;
          const res = await dangerDialog({
            title: `${t('clean')}: ${label}`, what: t('clean_what', { q: `${label} (${q.name})` }), actionLabel: t('clean'),
            options: [{ kind: 'select', key: 'state', label: t('clean_state'), initial: 'failed', choices: [['failed', t('clean_failed')], ['completed', t('clean_completed')]] }],
            ask: (o) => api.post(path, { state: o.state }),
            run: (token, word, reason, o) => api.post(path, { token, confirm: word, reason, state: o.state }),
          });
          if (res) await act(async () => res, (r) => t('cleaned_ok', { n: num(r.removed ?? r.records_removed ?? 0) }));
        },
      }, t('clean'));
      rows.push(h('div', { class: 'action-row action-danger' }, drainBtn, cleanBtn));
    } else {
      rows.push(h('p', { class: 'muted small' }, t('admin_only')));
    }
    fill(actions, h('h3', {}, t('actions')), rows);
  }

  fill(content, h('p', { class: 'muted loading' }, '…'));
  load();
  return {
    name,
    el: d.el,
    tick() { if (Date.now() - fetchedAt > 4000) load(); },
    destroy() { fetchDetail.drop(); d.destroy(); },
  };
}

export function queuesView(ctx, params) {
  const el = h('div', { class: 'view view-queues', 'data-view': 'queues' });
  const tableWrap = h('div', { class: 'table-wrap' });
  el.append(tableWrap);
  let panel = null;
  let selected = params.queue || null;
  let last = '';

  function renderTable(force = false) {
    const key = JSON.stringify([ctx.state.queues, selected, Math.floor(Date.now() / 30000)]);
    if (!force && key === last) return;
    last = key;
    fill(tableWrap, ctx.state.queues.length ? queueTable(ctx.state.queues, selected) : h('p', { class: 'muted loading' }, '…'));
  }

  function syncPanel(focus) {
    if (panel && panel.name === selected) return;
    if (panel) { panel.destroy(); panel = null; }
    if (selected) {
      panel = queuePanel(selected, ctx);
      el.append(panel.el);
      if (focus) panel.el.focus();
    }
  }

  renderTable(true);
  syncPanel(false);
  return {
    el,
    route(p) {
      selected = p.queue || null;
      renderTable(true);
      syncPanel(true);
    },
    tick() {
      renderTable();
      if (panel) panel.tick();
    },
    destroy() { if (panel) panel.destroy(); },
  };
}
