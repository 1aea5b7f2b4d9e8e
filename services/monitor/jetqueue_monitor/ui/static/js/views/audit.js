// Audit log: every control action and every refusal, newest first, with filters in the URL.

import * as api from '../api.js';
import { h, fill, debounce } from '../dom.js';
import { t, when, ago, queueLabel } from '../i18n.js';
import { patch } from '../router.js';
import { td, errorText } from '../widgets.js';

const ACTIONS = [
  'QUEUE_PAUSE', 'QUEUE_RESUME', 'QUEUE_DRAIN', 'QUEUE_CLEAN', 'QUEUE_RETRY_FAILED', 'JOB_RETRY', 'JOB_CANCEL', 'JOB_PROMOTE',
  'JOB_DELETE', 'BULK_RETRY', 'BULK_CANCEL', 'BULK_PROMOTE', 'BULK_DELETE', 'SCHEDULE_CREATE', 'SCHEDULE_UPDATE',
  'SCHEDULE_DELETE', 'SCHEDULE_PAUSE', 'SCHEDULE_RESUME', 'SCHEDULE_TRIGGER', 'INCIDENT_ACK', 'INCIDENT_SNOOZE', 'LOGIN',
];
const RANGES = { '1h': 3600, '24h': 86400, '7d': 7 * 86400 };
const PAGE = 50;
const KEYS = ['actor', 'action', 'queue', 'outcome', 'range', 'from', 'to'];

/** A refusal (a 403, a refused login) is recorded by the guard with the request's path; a failure has none. */
function outcome(a) {
  if (a.ok) return 'ok';
  return a.action === 'LOGIN' || (a.params && a.params.path) ? 'refused' : 'failed';
}

function query(p, before) {
  const q = new URLSearchParams({ limit: String(PAGE) });
  if (p.actor) q.set('actor', p.actor);
  if (p.action) q.set('action', p.action);
  if (p.queue) q.set('queue', p.queue);
  if (p.outcome === 'ok') q.set('ok', 'true');
  if (p.outcome === 'not_ok') q.set('ok', 'false');
  if (p.range && RANGES[p.range]) q.set('since', new Date(Date.now() - RANGES[p.range] * 1000).toISOString());
  if (p.range === 'custom' && p.from && !Number.isNaN(Date.parse(p.from))) q.set('since', new Date(p.from).toISOString());
  if (p.range === 'custom' && p.to && !Number.isNaN(Date.parse(p.to))) q.set('until', new Date(p.to).toISOString());
  if (before) q.set('before_id', String(before));
  return q.toString();
}

function filterBar(ctx, p) {
  const select = (key, label, options) => {
    const el = h('select', { id: `a-${key}`, class: 'input', 'data-filter': key },
      h('option', { value: '' }, t('all')), options.map(([v, l]) => h('option', { value: v, selected: p[key] === v }, l)));
    el.addEventListener('change', () => patch({ [key]: el.value || null }));
    return h('label', { class: 'field', for: `a-${key}` }, h('span', {}, label), el);
  };
  const moment = (key, label) => {
    const el = h('input', { id: `a-${key}`, type: 'datetime-local', class: 'input', 'data-filter': key, value: p[key] || '', step: '60' });
    el.addEventListener('change', () => patch({ [key]: el.value || null }));
    return h('label', { class: 'field', for: `a-${key}` }, h('span', {}, label), el);
  };
  const actor = h('input', { id: 'a-actor', class: 'input', 'data-filter': 'actor', value: p.actor || '', maxlength: '200', autocomplete: 'off' });
  const push = debounce(() => patch({ actor: actor.value.trim() || null }, { replace: true }), 400);
  actor.addEventListener('input', (ev) => { if (!ev.isComposing) push(); });
  return h('form', { class: 'filters', 'data-role': 'filters', onsubmit: (ev) => ev.preventDefault() },
    h('label', { class: 'field', for: 'a-actor' }, h('span', {}, t('filter_actor')), actor),
    select('action', t('filter_action'), ACTIONS.map((a) => [a, a])),
    select('queue', t('filter_queue'), ctx.state.queues.map((q) => [q.name, `${queueLabel(q)} (${q.name})`])),
    select('outcome', t('filter_outcome'), [['ok', t('outcome_ok')], ['not_ok', `${t('outcome_refused')} / ${t('outcome_failed')}`]]),
    select('range', t('filter_range'), [...Object.keys(RANGES), 'custom'].map((r) => [r, t(`range_${r}`)])),
    p.range === 'custom' ? [moment('from', t('range_from')), moment('to', t('range_to'))] : null,
    KEYS.some((k) => p[k]) ? h('button', { type: 'button', class: 'btn btn-ghost', 'data-role': 'clear', onclick: () => patch(Object.fromEntries(KEYS.map((k) => [k, null]))) }, t('clear_filters')) : null);
}

function auditTable(items) {
  const cols = ['col_time', 'col_outcome', 'col_actor', 'col_action', 'col_entity', 'col_reason', 'col_error'];
  return h('table', { class: 'table table-audit', 'data-role': 'audit-table' },
    h('thead', {}, h('tr', {}, cols.map((k) => h('th', { scope: 'col' }, t(k))))),
    h('tbody', {}, items.map((a) => {
      const o = outcome(a);
      return h('tr', { 'data-audit': String(a.id), 'data-action': a.action, 'data-outcome': o },
        td(t('col_time'), h('span', { title: when(a.created_at) }, ago(a.created_at)), { class: 'span-2' }),
        td(t('col_outcome'), h('span', { class: `chip chip-${o === 'ok' ? 'ok' : o === 'refused' ? 'warn' : 'bad'}` }, t(`outcome_${o}`)), { class: 'cell-status' }),
        td(t('col_actor'), h('span', {}, h('b', {}, a.actor), a.role ? h('span', { class: 'muted small' }, ` ${t(`role_${a.role}`)}`) : null), { class: 'span-2' }),
        td(t('col_action'), h('span', { class: 'mono' }, a.action), { class: 'cell-title' }),
        td(t('col_entity'), h('span', { class: 'mono small' }, `${a.entity_type} ${a.entity_id}`), { class: 'span-2' }),
        td(t('col_reason'), a.reason || '–', { class: a.reason ? '' : 'muted' }),
        td(t('col_error'), a.error || '–', { class: a.error ? 'bad cell-error' : 'muted cell-error is-empty' }));
    })));
}

export function auditView(ctx, params) {
  let p = { ...params };
  const el = h('div', { class: 'view view-audit', 'data-view': 'audit' });
  const bar = h('div', { class: 'filters-wrap' });
  const listWrap = h('div', { class: 'table-wrap', 'data-role': 'audit-list' });
  const more = h('div', { class: 'more' });
  el.append(bar, listWrap, more);
  let items = [];
  let next = null;

  const load = api.newest(({ append = false } = {}) => api.get(`/audit?${query(p, append ? next : null)}`),
    (body, { append = false } = {}) => {
      items = append ? items.concat(body.items) : body.items;
      next = body.next_before_id;
      fill(listWrap, items.length ? auditTable(items) : h('div', { class: 'empty', 'data-role': 'empty' }, h('p', {}, t('no_audit'))));
      fill(more, next ? h('button', { type: 'button', class: 'btn', 'data-role': 'more', onclick: () => load({ append: true }) }, t('load_older')) : null);
    },
    (err) => fill(listWrap, h('p', { class: 'bad' }, errorText(err))));

  fill(bar, filterBar(ctx, p));
  fill(listWrap, h('p', { class: 'muted loading' }, '…'));
  load();
  return {
    el,
    route(nextParams) {
      p = { ...nextParams };
      // rebuilt (the custom range's fields, the clear button), unless it would take the actor field from the typist
      if (document.activeElement !== bar.querySelector('[data-filter=actor]')) fill(bar, filterBar(ctx, p));
      load();
    },
    tick() {
      if (!bar.querySelector('#a-queue option:nth-child(2)') && ctx.state.queues.length) fill(bar, filterBar(ctx, p));
    },
    destroy() { load.drop(); },
  };
}
