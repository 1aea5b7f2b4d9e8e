// Jobs: a live list (polled every few seconds) with filters in the URL, and the job drawer.

import * as api from '../api.js';
import { h, fill, debounce } from '../dom.js';
import { t, num, duration, ago, when, queueLabel } from '../i18n.js';
import { patch } from '../router.js';
import { jobChip, td, errorText } from '../widgets.js';
import { jobDrawer } from './job_drawer.js';
import { bulkBar } from './bulk.js';

const POLL_MS = 3000;
const STATUSES = ['failed', 'active', 'waiting', 'scheduled', 'completed', 'cancelled'];
const RANGES = { '15m': 15 * 60, '1h': 3600, '6h': 6 * 3600, '24h': 86400, '7d': 7 * 86400 };
const LEVELS = [0, 1, 2];
const FILTER_KEYS = ['queue', 'status', 'type', 'user', 'range', 'from', 'to', 'level', 'q'];
const PAGE = 50;
let filtersOpen = false; // the phone's folded filter panel, kept across redraws

/** URL params → the API's filter ({queue, status, name, user_id, q, level, since, until}); bulk actions send it as is. */
export function apiFilter(p) {
  const f = {};
  if (p.queue) f.queue = p.queue;
  if (p.status) f.status = p.status;
  if (p.type) f.name = p.type;
  if (p.user) f.user_id = p.user;
  if (p.q) f.q = p.q;
  if (p.level !== undefined && /^[0-9]$/.test(p.level)) f.level = Number(p.level);
  if (p.range && RANGES[p.range]) f.since = new Date(Date.now() - RANGES[p.range] * 1000).toISOString();
  if (p.range === 'custom') {
    // datetime-local values are the browser's local time
    if (p.from && !Number.isNaN(Date.parse(p.from))) f.since = new Date(p.from).toISOString();
    if (p.to && !Number.isNaN(Date.parse(p.to))) f.until = new Date(p.to).toISOString();
  }
  return f;
}

function apiQuery(p, limit, cursor) {
  const q = new URLSearchParams(Object.entries(apiFilter(p)).map(([k, v]) => [k, String(v)]));
  q.set('limit', String(limit));
  if (cursor) q.set('cursor', cursor);
  return q.toString();
}

/** A text filter: into the URL 300 ms after the last key (not mid-way through a Korean IME syllable). */
function typed(el, key) {
  const push = debounce(() => patch({ [key]: el.value.trim() || null }, { replace: true }), 300);
  el.addEventListener('input', (ev) => { if (!ev.isComposing) push(); });
  el.addEventListener('compositionend', push);
  el.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' && !ev.isComposing) patch({ [key]: el.value.trim() || null }); });
}

const TEXT_FILTERS = ['type', 'user', 'q'];

function filterBar(ctx, p, types) {
  const qs = ctx.state.queues;
  const select = (key, label, options) => {
    const el = h('select', { id: `f-${key}`, class: 'input', 'data-filter': key },
      h('option', { value: '' }, t('all')),
      options.map(([v, l]) => h('option', { value: v, selected: p[key] === v }, l)));
    el.addEventListener('change', () => patch({ [key]: el.value || null, job: null }));
    return h('label', { class: 'field', for: `f-${key}` }, h('span', {}, label), el);
  };
  const text = (key, label, attrs = {}) => {
    // maxlength: the API's bound for these filters (longer is a 400)
    const el = h('input', { id: `f-${key}`, class: 'input', 'data-filter': key, value: p[key] || '', autocomplete: 'off', maxlength: '200', ...attrs });
    typed(el, key);
    return h('label', { class: 'field', for: `f-${key}` }, h('span', {}, label), el);
  };
  const moment = (key, label) => {
    const el = h('input', { id: `f-${key}`, type: 'datetime-local', class: 'input', 'data-filter': key, value: p[key] || '', step: '60' });
    el.addEventListener('change', () => patch({ [key]: el.value || null, job: null }));
    return h('label', { class: 'field', for: `f-${key}` }, h('span', {}, label), el);
  };
  const queueOptions = qs.map((q) => [q.name, `${queueLabel(q)} (${q.name})`]);
  if (p.queue && !qs.some((q) => q.name === p.queue)) queueOptions.push([p.queue, p.queue]);
  const active = ['queue', 'status', 'type', 'user', 'range', 'level'].filter((k) => p[k]).length;
  const hasFilter = active > 0 || Boolean(p.q);
  // On a phone the filters fold under one button (open when any is set); on a desktop they are always shown.
  const form = h('form', { class: `filters${active || filtersOpen ? ' open' : ''}`, 'data-role': 'filters', role: 'search', onsubmit: (ev) => ev.preventDefault() },
    h('label', { class: 'field field-search', for: 'f-q' }, h('span', { class: 'sr-only' }, t('search')),
      h('input', {
        id: 'f-q', type: 'search', class: 'input', 'data-filter': 'q', 'data-role': 'search', value: p.q || '', maxlength: '200',
        placeholder: `${t('search')}  ( / )`, autocomplete: 'off', enterkeyhint: 'search',
      })),
    select('queue', t('filter_queue'), queueOptions),
    select('status', t('filter_status'), STATUSES.map((s) => [s, t(`js_${s}`)])),
    text('type', t('filter_type'), { list: 'job-types', 'data-role': 'type' }),
    h('datalist', { id: 'job-types' }, [...types].sort().map((n) => h('option', { value: n }))),
    text('user', t('filter_user')),
    select('level', t('filter_level'), LEVELS.map((l) => [String(l), t(`level_${l}`)])),
    select('range', t('filter_range'), [...Object.keys(RANGES), 'custom'].map((r) => [r, t(`range_${r}`)])),
    p.range === 'custom' ? [moment('from', t('range_from')), moment('to', t('range_to'))] : null,
    h('button', {
      type: 'button', class: 'btn btn-small filters-toggle', 'data-role': 'filters-toggle', 'aria-expanded': String(Boolean(active || filtersOpen)),
      onclick: (ev) => { filtersOpen = !form.classList.contains('open'); form.classList.toggle('open', filtersOpen); ev.currentTarget.setAttribute('aria-expanded', String(filtersOpen)); },
    }, active ? `${t('filters')} (${active})` : t('filters')),
    h('button', {
      type: 'button', class: 'btn btn-ghost', 'data-role': 'clear', hidden: !hasFilter,
      onclick: () => patch(Object.fromEntries(FILTER_KEYS.map((k) => [k, null]))),
    }, t('clear_filters')));
  typed(form.querySelector('[data-filter=q]'), 'q');
  return form;
}

/** When the job was created, or (delayed) when it runs. */
function whenCell(j) {
  if (j.status === 'scheduled' && j.run_at) {
    return h('span', { class: 'plan', title: when(j.run_at), 'data-role': 'run-at' }, t('runs_at', { t: ago(j.run_at) }));
  }
  return h('span', { title: when(j.created_at) }, ago(j.created_at));
}

function jobTable(items, queues, open, picked, onPick) {
  const byName = Object.fromEntries(queues.map((q) => [q.name, q]));
  const bulk = api.can('operator');
  const cols = ['col_status', 'col_job_id', 'col_type', 'col_user', 'col_attempts', 'col_duration', 'col_error', 'col_created'];
  const all = h('input', { type: 'checkbox', 'data-role': 'select-all', 'aria-label': t('select_all'), checked: items.length > 0 && items.every((j) => picked.has(j.job_id)) });
  all.addEventListener('change', () => onPick(items.map((j) => j.job_id), all.checked));
  const head = [
    bulk ? h('th', { scope: 'col', class: 'cell-pick' }, h('label', { class: 'check pick' }, all)) : null,
    cols.map((k) => h('th', { scope: 'col', class: k === 'col_attempts' || k === 'col_duration' ? 'num' : k === 'col_error' ? 'col-error' : null }, t(k))),
  ];
  const pick = (j) => {
    const box = h('input', { type: 'checkbox', 'data-role': 'pick', 'aria-label': `${t('col_select')} ${j.job_id}`, checked: picked.has(j.job_id) });
    box.addEventListener('change', () => onPick([j.job_id], box.checked));
    // the label is the tap target (44 px on a phone); a tap on it does not open the drawer
    return td(t('col_select'), h('label', { class: 'check pick', onclick: (ev) => ev.stopPropagation() }, box), { class: 'cell-pick' });
  };
  return h('table', { class: 'table table-jobs', 'data-role': 'jobs-table' },
    h('thead', {}, h('tr', {}, head)),
    h('tbody', {}, items.map((j) => h('tr', {
      'data-job': j.job_id, 'data-status': j.status, tabindex: '0',
      class: `row-click${j.job_id === open ? ' selected' : ''}${picked.has(j.job_id) ? ' picked' : ''}`,
      onclick: () => patch({ job: j.job_id }),
      onkeydown: (ev) => { if (ev.target === ev.currentTarget && (ev.key === 'Enter' || ev.key === ' ')) { ev.preventDefault(); patch({ job: j.job_id }); } },
    },
      bulk ? pick(j) : null,
      td(t('col_status'), jobChip(j.status), { class: 'cell-status' }),
      td(t('col_job_id'), h('span', { class: 'mono job-id', title: j.job_id, 'data-role': 'job-id' }, j.job_id), { class: 'cell-id span-2' }),
      td(t('col_type'), h('div', { class: 'qname' }, h('span', { class: 'jtype' }, j.name),
        h('span', { class: 'qkey muted' }, byName[j.queue] ? queueLabel(byName[j.queue]) : j.queue)), { class: 'cell-title' }),
      td(t('col_user'), j.user_id || '–', { class: j.user_id ? 'mono' : 'muted' }),
      td(t('col_attempts'), `${num(j.attempts_made)} / ${num(j.max_attempts)}`, { class: `num${j.attempts_made > 1 ? ' warn' : ''}` }),
      td(t('col_duration'), duration(j.duration_ms), { class: 'num' }),
      td(t('col_error'), j.error ? h('span', { class: 'err-cell', title: j.error }, j.error.split('\n')[0].slice(0, 120)) : '–', { class: j.error ? 'bad cell-error' : 'muted cell-error is-empty' }),
      td(t('col_created'), whenCell(j), { class: 'span-2' })))));
}

export function jobsView(ctx, params) {
  let p = { ...params };
  const el = h('div', { class: 'view view-jobs', 'data-view': 'jobs' });
  const barWrap = h('div', { class: 'filters-wrap' });
  const liveToggle = h('input', { type: 'checkbox', id: 'jobs-live', checked: true, 'data-role': 'live-toggle' });
  const countEl = h('span', { class: 'muted', 'data-role': 'count' });
  const listWrap = h('div', { class: 'table-wrap', 'data-role': 'jobs-list', 'aria-live': 'off' });
  const more = h('div', { class: 'more' });
  const picked = new Set(); // the rows selected for a bulk action
  const bulk = api.can('operator')
    ? bulkBar({ selection: () => [...picked], filter: () => apiFilter(p), onDone: () => { picked.clear(); bulk.render(); load(); } })
    : null;
  el.append(barWrap,
    h('div', { class: 'list-head' }, countEl, h('span', { class: 'muted small' }, t('jobs_note')), h('span', { class: 'spacer' }),
      h('label', { class: 'check', for: 'jobs-live' }, liveToggle, ' ', t('live_updates'))),
    bulk ? bulk.el : null, listWrap, more);
  let items = [];
  let cursor = null;
  let timer = null;
  let drawerObj = null;
  let lastKey = '';
  const types = new Set();

  const load = api.newest(({ append = false } = {}) => {
    // A refresh re-reads everything loaded so far (up to the API's 500), so "load older" survives polling.
    const limit = append ? PAGE : Math.min(500, Math.max(PAGE, items.length));
    return api.get(`/jobs?${apiQuery(p, limit, append ? cursor : null)}`);
  }, (body, { append = false } = {}) => {
    items = append ? items.concat(body.items) : body.items;
    cursor = body.next_cursor;
    renderList();
  }, (err) => fill(listWrap, h('p', { class: 'bad' }, errorText(err))));

  function renderList(force = false) {
    const before = types.size;
    for (const j of items) types.add(j.name);
    const key = JSON.stringify([items, p.job, [...picked], ctx.state.queues.length, Math.floor(Date.now() / 30000)]);
    if (before !== types.size) renderBar();
    if (!force && key === lastKey) return;
    lastKey = key;
    countEl.textContent = t('jobs_count', { n: num(items.length) }) + (cursor ? '+' : '');
    fill(listWrap, items.length
      ? jobTable(items, ctx.state.queues, p.job, picked, onPick)
      : h('div', { class: 'empty', 'data-role': 'empty' }, h('p', {}, t('no_jobs'))));
    fill(more, cursor ? h('button', { type: 'button', class: 'btn', 'data-role': 'more', onclick: () => load({ append: true }) }, t('load_more')) : null);
  }

  function onPick(ids, on) {
    for (const id of ids) { if (on) picked.add(id); else picked.delete(id); }
    renderList(true);
    bulk.render();
  }

  function renderBar() {
    // Keep focus and caret in a text filter while typing.
    const active = document.activeElement;
    const key = active && active.dataset ? active.dataset.filter : null;
    const caret = key && active.selectionStart;
    fill(barWrap, filterBar(ctx, p, types));
    if (key) {
      const again = barWrap.querySelector(`[data-filter="${key}"]`);
      if (again) { again.focus(); if (caret !== null && again.setSelectionRange) try { again.setSelectionRange(caret, caret); } catch { /* select */ } }
    }
  }

  function syncDrawer(focus) {
    if (drawerObj && drawerObj.id === p.job) return;
    if (drawerObj) { drawerObj.destroy(); drawerObj = null; }
    if (p.job) {
      drawerObj = jobDrawer(p.job, ctx, () => { load(); });
      el.append(drawerObj.el);
      if (focus) drawerObj.el.focus();
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if (liveToggle.checked && !document.hidden) {
        await load();
        if (drawerObj) drawerObj.poll();
      }
      schedule();
    }, POLL_MS);
  }
  liveToggle.addEventListener('change', () => { if (liveToggle.checked) load(); });

  renderBar();
  fill(listWrap, h('p', { class: 'muted loading' }, '…'));
  load();
  syncDrawer(false);
  schedule();

  return {
    el,
    route(next) {
      const filtersChanged = FILTER_KEYS.some((k) => (next[k] || '') !== (p[k] || ''));
      const customChanged = (next.range === 'custom') !== (p.range === 'custom'); // the from / to fields come or go
      p = { ...next };
      if (filtersChanged) {
        items = [];
        cursor = null;
        picked.clear(); // a selection belongs to the list it was made in
        if (bulk) bulk.render();
        // Rebuild the bar unless the change came from typing in it (a rebuild would break IME input).
        const fromTyping = TEXT_FILTERS.every((k) => (barWrap.querySelector(`[data-filter=${k}]`)?.value.trim() || '') === (p[k] || ''));
        const selects = ['queue', 'status', 'range', 'level', 'from', 'to'].every((k) => (barWrap.querySelector(`[data-filter=${k}]`)?.value || '') === (p[k] || ''));
        if (fromTyping && selects && !customChanged) {
          const clear = barWrap.querySelector('[data-role=clear]');
          if (clear) clear.hidden = !FILTER_KEYS.some((k) => p[k]);
        } else {
          renderBar();
        }
        load();
      } else {
        renderList(true);
      }
      syncDrawer(true);
    },
    tick() {
      // The queue list in the filter arrives with the first stream update.
      if (!barWrap.querySelector('#f-queue option:nth-child(2)') && ctx.state.queues.length) renderBar();
      renderList(); // redraws only when the queue labels just arrived
      if (drawerObj) drawerObj.tick();
    },
    destroy() {
      clearTimeout(timer);
      load.drop();
      if (drawerObj) drawerObj.destroy();
      if (bulk) bulk.destroy();
    },
  };
}
