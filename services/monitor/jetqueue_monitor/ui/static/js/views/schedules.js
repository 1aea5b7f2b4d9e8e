// Schedules: every recurring job with its expression, zone, next run and the outcome of its last runs;
// operators pause, resume and run them now, admins create, edit and delete them.

import * as api from '../api.js';
import { h, fill } from '../dom.js';
import { t, num, when, ago, queueLabel } from '../i18n.js';
import { link, td, toast, errorText, jobChip } from '../widgets.js';
import { confirmDialog, formDialog } from '../dialogs.js';

const REFRESH_MS = 5000;

/** The last runs, oldest left: one square per job, coloured by its outcome; each a link to the job. */
function sparkline(runs) {
  if (!runs.length) return h('span', { class: 'muted small' }, t('runs_none'));
  return h('span', { class: 'spark', 'data-role': 'sparkline' }, [...runs].reverse().map((r) => link('jobs', { job: r.job_id }, {
    class: `spark-dot spark-${r.status}`, 'data-status': r.status, title: `${t(`js_${r.status}`)} · ${when(r.created_at)}`,
    'aria-label': `${t(`js_${r.status}`)} ${when(r.created_at)}`,
  })));
}

function scheduleFields(queues, s) {
  const editing = Boolean(s);
  return [
    { key: 'queue', label: t('sched_queue'), kind: 'select', value: s ? s.queue : queues[0]?.name, readonly: editing,
      choices: queues.map((q) => [q.name, `${queueLabel(q)} (${q.name})`]) },
    { key: 'name', label: t('sched_name'), value: s ? s.name : '', readonly: editing, required: true },
    { key: 'cron', label: t('sched_cron'), value: s ? s.cron : '0 9 * * *', required: true },
    { key: 'time_zone', label: t('sched_tz'), value: s ? s.time_zone : 'UTC', required: true },
    { key: 'job_name', label: t('sched_job_name'), value: s ? (s.job_name === s.name ? '' : s.job_name) : '' },
    { key: 'data', label: t('sched_data'), kind: 'textarea', value: s && s.data !== undefined && s.data !== null ? JSON.stringify(s.data, null, 2) : '' },
    { key: 'priority', label: t('sched_priority'), kind: 'number', value: s && s.priority ? String(s.priority) : '' },
  ];
}

function parseData(text) {
  if (!text) return { ok: true, value: null };
  try {
    const value = JSON.parse(text);
    return { ok: value !== null && typeof value === 'object' && !Array.isArray(value), value };
  } catch {
    return { ok: false, value: null };
  }
}

/** The buttons of one schedule: operators pause, resume and run it now, admins edit and delete it. */
function actions(s, { act, edit }) {
  const base = `/schedules/${api.enc(s.queue)}/${api.enc(s.name)}`;
  const label = `${s.name} (${s.queue})`;
  const btn = (action, text, onclick, cls = '') => h('button', { type: 'button', class: `btn btn-small ${cls}`, 'data-action': action, onclick }, text);
  const out = [];
  if (api.can('operator')) {
    out.push(s.paused
      ? btn('resume', `▶ ${t('resume')}`, () => act(() => api.post(`${base}/resume`), () => t('sched_resumed_ok')))
      : btn('pause', t('pause'), () => act(() => api.post(`${base}/pause`), () => t('sched_paused_ok'))));
    out.push(btn('trigger', t('run_now'), async () => {
      if (await confirmDialog({ title: t('run_now'), message: t('confirm_trigger', { s: label }), confirmLabel: t('run_now') })) {
        await act(() => api.post(`${base}/trigger`), (r) => t('sched_triggered_ok', { id: r.job_id }));
      }
    }));
  }
  if (api.can('admin')) {
    out.push(btn('edit', t('edit'), () => edit(s)));
    out.push(btn('delete', t('delete_job'), async () => {
      if (await confirmDialog({ title: t('delete_job'), message: t('confirm_delete_schedule', { s: label }), confirmLabel: t('delete_job'), tone: 'danger' })) {
        await act(() => api.post(`${base}/delete`), () => t('sched_deleted_ok'));
      }
    }, 'btn-danger-outline'));
  }
  return out;
}

function row(s, byName, ops) {
  const q = byName[s.queue];
  return h('tr', { 'data-schedule': `${s.queue}/${s.name}`, 'data-paused': String(s.paused), class: s.paused ? 'status-Paused' : '' },
    td(t('col_schedule'), h('div', { class: 'qname' }, h('span', { class: 'qlabel' }, s.name),
      h('span', { class: 'qkey muted' }, q ? `${queueLabel(q)} · ${s.queue}` : s.queue)), { class: 'cell-title' }),
    td(t('col_status'), h('span', { class: `chip chip-${s.paused ? 'warn' : 'ok'}`, 'data-role': 'sched-state' }, t(s.paused ? 'sched_paused' : 'sched_active')), { class: 'cell-status' }),
    td(t('col_cron'), h('span', {}, h('code', { 'data-role': 'cron' }, s.cron), h('span', { class: 'muted small' }, ` ${s.time_zone}`)), { class: 'span-2' }),
    td(t('col_next_run'), s.next_run_at ? h('span', { title: when(s.next_run_at), 'data-role': 'next-run' }, ago(s.next_run_at)) : '–', { class: 'span-2' }),
    td(t('col_last_runs'), h('span', {}, sparkline(s.last_runs || []), s.last_runs && s.last_runs.length ? [' ', jobChip(s.last_runs[0].status)] : null), { class: 'span-4' }),
    api.can('operator') ? td(t('col_actions'), h('div', { class: 'row-actions' }, actions(s, ops)), { class: 'span-4' }) : null);
}

export function schedulesView(ctx) {
  const el = h('div', { class: 'view view-schedules', 'data-view': 'schedules' });
  const head = h('div', { class: 'list-head' });
  const listWrap = h('div', { class: 'table-wrap', 'data-role': 'schedules-list' });
  el.append(head, listWrap);
  let items = null;
  let fetchedAt = 0;
  let lastKey = '';

  const fetchSchedules = api.newest(() => api.get('/schedules'),
    (got) => { items = got; render(); },
    (err) => fill(listWrap, h('p', { class: 'bad' }, errorText(err))));
  function load() {
    fetchedAt = Date.now();
    return fetchSchedules();
  }

  async function act(fn, okText) {
    try {
      const res = await fn();
      toast(okText(res));
    } catch (err) {
      toast(errorText(err), 'bad');
    }
    await load();
  }

  async function edit(s) {
    const values = await formDialog({
      title: s ? `${t('edit')}: ${s.name}` : t('new_schedule'),
      fields: scheduleFields(ctx.state.queues, s),
      check: (v) => (parseData(v.data).ok ? null : t('bad_json')),
    });
    if (!values) return;
    const body = { cron: values.cron, time_zone: values.time_zone, data: parseData(values.data).value };
    if (values.job_name) body.job_name = values.job_name;
    if (values.priority) body.priority = Number(values.priority);
    const path = (x) => `/schedules/${api.enc(x.queue)}/${api.enc(x.name)}`;
    await act(
      () => api.put(path(s || values), body),
      () => t('sched_saved'),
    );
  }

  function render() {
    if (!items) return;
    const key = JSON.stringify([items, ctx.state.queues.length, Math.floor(Date.now() / 30000)]);
    if (key === lastKey) return;
    lastKey = key;
    fill(head, h('span', { class: 'muted', 'data-role': 'count' }, t('schedules_count', { n: num(items.length) })), h('span', { class: 'spacer' }),
      api.can('admin') ? h('button', { type: 'button', class: 'btn btn-primary', 'data-action': 'new-schedule', onclick: () => edit(null) }, `+ ${t('new_schedule')}`) : null);
    if (!items.length) {
      fill(listWrap, h('div', { class: 'empty', 'data-role': 'empty' }, h('p', {}, t('no_schedules'))));
      return;
    }
    const byName = Object.fromEntries(ctx.state.queues.map((q) => [q.name, q]));
    const cols = ['col_schedule', 'col_status', 'col_cron', 'col_next_run', 'col_last_runs', ...(api.can('operator') ? ['col_actions'] : [])];
    fill(listWrap, h('table', { class: 'table table-schedules', 'data-role': 'schedules-table' },
      h('thead', {}, h('tr', {}, cols.map((k) => h('th', { scope: 'col' }, t(k))))),
      h('tbody', {}, items.map((s) => row(s, byName, { act, edit })))));
  }

  fill(listWrap, h('p', { class: 'muted loading' }, '…'));
  load();
  return {
    el,
    route() { render(); },
    tick() { if (Date.now() - fetchedAt > REFRESH_MS) load(); else render(); },
    destroy() { fetchSchedules.drop(); },
  };
}
