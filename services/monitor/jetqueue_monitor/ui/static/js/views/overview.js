// Overview: six KPI cards, then the incidents (grouped by rule, each one click from its tab with the filter
// applied, acknowledged or snoozed by an operator), then a tile per queue.

import * as api from '../api.js';
import { h, fill } from '../dom.js';
import { t, num, pct, duration, pickLang, queueLabel, ago } from '../i18n.js';
import { link, queueChip, toast, errorText } from '../widgets.js';

const SEVERITY_ORDER = { critical: 0, warning: 1 };

function drillParams(d) {
  const p = {};
  if (d.queue) p.queue = d.queue;
  if (d.status) p.status = d.status;
  return p;
}

/** Acknowledge or snooze one incident (operators); the banner redraws on the next stream tick. */
async function acknowledge(ctx, i, how) {
  try {
    await api.post(`/incidents/${how}`, how === 'snooze' ? { type: i.type, queue: i.queue, minutes: 60 } : { type: i.type, queue: i.queue });
    toast(t(how === 'snooze' ? 'snooze_ok' : 'ack_ok'));
  } catch (err) {
    toast(errorText(err), 'bad');
  }
  await ctx.refresh().catch(() => {});
}

function incidentRow(ctx, i, byName) {
  const d = i.drill_down || { tab: 'queues', queue: i.queue };
  const acked = i.acknowledged;
  return h('li', { class: `incident sev-${i.severity}${acked ? ' acked' : ''}`, 'data-type': i.type, 'data-queue': i.queue },
    h('span', { class: `sev sev-${i.severity}` }, t(`severity_${i.severity}`)),
    h('span', { class: 'incident-msg' }, pickLang(i.message),
      acked ? h('span', { class: 'ack-tag muted small', 'data-role': 'acked' }, ` ✓ ${t('acked_by', { u: acked.by })}`) : null),
    // both messages name the queue by its label; its key is for the ones who know the keys
    h('span', { class: 'incident-queue muted mono' }, byName[i.queue] ? i.queue : ''),
    api.can('operator') && !acked
      ? h('button', { type: 'button', class: 'btn btn-small btn-ghost', 'data-action': 'ack', onclick: () => acknowledge(ctx, i, 'ack') }, t('acknowledge'))
      : null,
    api.can('operator')
      ? h('button', { type: 'button', class: 'btn btn-small btn-ghost', 'data-action': 'snooze', onclick: () => acknowledge(ctx, i, 'snooze') }, t('snooze'))
      : null,
    link(d.tab, drillParams(d), { class: 'btn btn-small incident-open', 'data-role': 'drill' }, `${t('open')} →`));
}

/** Incidents of one rule together: one line with the queues it hits, each incident folded under it. */
function incidentGroup(ctx, type, items, byName) {
  if (items.length === 1) return incidentRow(ctx, items[0], byName);
  const worst = items.some((i) => i.severity === 'critical') ? 'critical' : 'warning';
  const labels = items.map((i) => (byName[i.queue] ? queueLabel(byName[i.queue]) : i.queue)).join(', ');
  return h('li', { class: `incident-group sev-${worst}`, 'data-group': type, 'data-count': String(items.length) },
    h('details', {},
      h('summary', {},
        h('span', { class: `sev sev-${worst}` }, t(`severity_${worst}`)),
        h('span', { class: 'incident-msg' }, `${t(`rule_${type}`)} · ${t('n_queues', { n: items.length })}`,
          h('span', { class: 'muted group-queues' }, ` — ${labels}`))),
      h('ul', { class: 'incident-members' }, items.map((i) => incidentRow(ctx, i, byName)))));
}

function incidentBanner(ctx, incidents, queues) {
  const byName = Object.fromEntries(queues.map((q) => [q.name, q]));
  const snoozed = incidents.filter((i) => i.snoozed_until);
  const shown = incidents.filter((i) => !i.snoozed_until);
  if (!shown.length) {
    return h('section', { class: 'incidents incidents-none', 'data-role': 'incidents', 'data-count': '0' },
      h('span', { class: 'ok-mark', 'aria-hidden': 'true' }, '✓'), t('no_incidents'),
      snoozed.length ? h('span', { class: 'muted small', 'data-role': 'snoozed' }, ` · ${t('snoozed_n', { n: snoozed.length })}`) : null);
  }
  const sorted = [...shown].sort((a, b) => (SEVERITY_ORDER[a.severity] ?? 9) - (SEVERITY_ORDER[b.severity] ?? 9) || a.type.localeCompare(b.type));
  const groups = new Map();
  for (const i of sorted) groups.set(i.type, [...(groups.get(i.type) || []), i]);
  const open = shown.filter((i) => !i.acknowledged);
  const worst = open.length ? (open.some((i) => i.severity === 'critical') ? 'critical' : 'warning') : 'acked';
  return h('section', { class: `incidents incidents-${worst}`, 'data-role': 'incidents', 'data-count': String(shown.length), 'aria-labelledby': 'incidents-title' },
    h('h2', { id: 'incidents-title' }, h('span', { 'aria-hidden': 'true' }, '⚠ '), open.length ? t('incidents_title', { n: shown.length }) : t('acked_all'),
      snoozed.length ? h('span', { class: 'muted small', 'data-role': 'snoozed' }, ` · ${t('snoozed_n', { n: snoozed.length })}`) : null),
    h('ul', {}, [...groups].map(([type, items]) => incidentGroup(ctx, type, items, byName))));
}

function kpi(key, label, value, sub, target) {
  const body = [h('span', { class: 'kpi-label' }, label), h('span', { class: 'kpi-value', 'data-role': 'value' }, value),
    h('span', { class: 'kpi-sub muted' }, sub || '\u00a0')];
  const attrs = { class: 'kpi', 'data-kpi': key };
  return target ? link(target[0], target[1], attrs, ...body) : h('div', attrs, ...body);
}

function kpis(ov) {
  const rate = ov.success_rate;
  const rateCard = kpi('success_rate', t('kpi_success_rate'), pct(rate), t('kpi_completed', { n: num(ov.completed_24h) }), ['jobs', { range: '24h' }]);
  if (rate !== null && rate !== undefined && rate < 90) rateCard.classList.add('kpi-bad');
  const failedCard = kpi('failed_24h', t('kpi_failed_24h'), num(ov.failed_24h), t('kpi_dlq', { n: num(ov.dead_lettered) }), ['jobs', { status: 'failed', range: '24h' }]);
  if (ov.failed_24h > 0) failedCard.classList.add('kpi-bad');
  const workersCard = kpi('online_workers', t('kpi_online_workers'), num(ov.online_workers), t('kpi_workers_hint'), ['workers', {}]);
  if (ov.online_workers === 0) workersCard.classList.add('kpi-bad');
  return h('div', { class: 'kpis', 'data-role': 'kpis' },
    workersCard,
    kpi('waiting', t('kpi_waiting'), num(ov.waiting), t('kpi_active', { n: num(ov.active) }), ['queues', {}]),
    kpi('delayed', t('kpi_delayed'), num(ov.delayed), t('kpi_scheduled'), ['queues', {}]),
    failedCard,
    rateCard,
    kpi('duration', t('kpi_duration'), duration(ov.avg_duration_ms), t('kpi_p95', { d: duration(ov.p95_duration_ms) }), null));
}

function queueTiles(queues) {
  const rank = { Degraded: 0, Paused: 1, Running: 2 };
  const sorted = [...queues].sort((a, b) => (rank[a.status] - rank[b.status]) || ((b.waiting || 0) - (a.waiting || 0)));
  return h('section', { class: 'tiles-wrap' },
    h('h2', { class: 'section-title' }, t('tab_queues')),
    h('div', { class: 'tiles', 'data-role': 'queue-tiles' }, sorted.map((q) => link('queues', { queue: q.name }, { class: `tile tile-${q.status}`, 'data-queue': q.name },
      h('span', { class: 'tile-head' }, h('span', { class: 'tile-name' }, queueLabel(q)), queueChip(q.status)),
      h('span', { class: 'tile-key mono muted' }, q.name),
      h('span', { class: 'tile-nums' },
        h('span', {}, t('col_waiting'), ' ', h('b', {}, num(q.waiting))),
        h('span', { class: q.failed ? 'bad' : '' }, t('col_failed'), ' ', h('b', {}, num(q.failed))),
        h('span', { class: 'muted' }, q.last_processed_at ? ago(q.last_processed_at) : ''))))));
}

export function overviewView(ctx) {
  const el = h('div', { class: 'view view-overview', 'data-view': 'overview' });
  let last = '';
  function render(force = false) {
    const ov = ctx.state.overview;
    if (!ov) {
      fill(el, h('p', { class: 'muted loading' }, '…'));
      return;
    }
    // Redraw only when something changed: a redraw would drop keyboard focus every tick.
    const { sampled_at: _ignored, ...data } = ov;
    const key = JSON.stringify([data, Math.floor(Date.now() / 30000), ctx.state.queues.map((q) => [q.name, q.status, q.waiting, q.failed, q.last_processed_at])]);
    if (!force && key === last) return;
    last = key;
    const unfolded = new Set([...el.querySelectorAll('[data-group] > details[open]')].map((d) => d.parentElement.dataset.group));
    // the KPIs first: at any number of incidents they stay above the fold
    fill(el, kpis(ov), incidentBanner(ctx, ov.incidents || [], ctx.state.queues), queueTiles(ctx.state.queues));
    for (const g of unfolded) el.querySelector(`[data-group="${g}"] > details`)?.setAttribute('open', '');
  }
  render(true);
  return { el, route: () => render(true), tick: () => render(), destroy() {} };
}
