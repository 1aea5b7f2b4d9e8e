// Bulk actions of the Jobs tab: on the selected rows, or on every job the filters match (counted by a dry
// run first, shown before confirming); the server runs them throttled and the bar shows the progress.

import * as api from '../api.js';
import { h, fill } from '../dom.js';
import { t, num } from '../i18n.js';
import { toast, errorText } from '../widgets.js';
import { confirmDialog } from '../dialogs.js';

const ACTIONS = [
  { action: 'retry', role: 'operator', tone: 'primary' },
  { action: 'cancel', role: 'operator', tone: 'danger' },
  { action: 'promote', role: 'operator', tone: 'primary' },
  { action: 'delete', role: 'admin', tone: 'danger' },
];
const POLL_MS = 500;

/**
 * The bulk bar. `selection()` → the selected job ids; `filter()` → the API filter of the list;
 * `onDone()` after an action ended (the list reloads, the selection clears).
 */
export function bulkBar({ selection, filter, onDone }) {
  const el = h('div', { class: 'bulk-bar', 'data-role': 'bulk-bar' });
  const progress = h('div', { class: 'bulk-progress', 'data-role': 'bulk-progress', hidden: true });
  let timer = null;

  async function start(action, scope) {
    const label = t(`bulk_${action}`);
    let dry;
    try {
      dry = await api.post(`/bulk/${action}`, { ...scope, dry_run: true });
    } catch (err) {
      toast(errorText(err), 'bad');
      return;
    }
    if (!dry.matched) {
      toast(t('bulk_nothing'));
      return;
    }
    const yes = await confirmDialog({
      title: t('bulk_title', { a: label, n: num(dry.matched) }),
      count: dry.matched,
      message: `${t('bulk_count_note')}${dry.over_limit ? ` ${t('bulk_over', { n: num(dry.limit) })}` : ''}`,
      confirmLabel: label,
      tone: ACTIONS.find((a) => a.action === action).tone,
    });
    if (!yes) return;
    try {
      const op = await api.post(`/bulk/${action}`, { ...scope, token: dry.token });
      follow(op);
    } catch (err) {
      toast(errorText(err), 'bad');
    }
  }

  function paint(op) {
    const label = t(`bulk_${op.action}`);
    progress.hidden = false;
    fill(progress,
      h('progress', { max: String(Math.max(op.total, 1)), value: String(op.done + op.failed + op.skipped), 'aria-label': label }),
      h('span', { 'data-role': 'bulk-status', 'data-status': op.status },
        op.status === 'running'
          ? t('bulk_running', { a: label, d: num(op.done + op.failed + op.skipped), n: num(op.total) })
          : t('bulk_done', { a: label, d: num(op.done), f: num(op.failed), s: num(op.skipped) })));
  }

  function follow(op) {
    paint(op);
    clearTimeout(timer);
    if (op.status !== 'running') {
      toast(t('bulk_done', { a: t(`bulk_${op.action}`), d: num(op.done), f: num(op.failed), s: num(op.skipped) }), op.failed ? 'bad' : 'ok');
      onDone();
      return;
    }
    timer = setTimeout(async () => {
      try { follow(await api.get(`/bulk/${op.id}`)); } catch { timer = setTimeout(() => follow(op), POLL_MS * 4); }
    }, POLL_MS);
  }

  function buttons(scopeOf, prefix) {
    return ACTIONS.filter((a) => api.can(a.role)).map((a) => h('button', {
      type: 'button', class: `btn btn-small${a.tone === 'danger' ? ' btn-danger-outline' : ''}`,
      'data-bulk': `${prefix}-${a.action}`, onclick: () => start(a.action, scopeOf()),
    }, t(`bulk_${a.action}`)));
  }

  function render() {
    const ids = selection();
    fill(el,
      ids.length
        ? h('div', { class: 'bulk-row', 'data-role': 'bulk-selection' },
          h('strong', { 'data-role': 'selected-count' }, t('selected_n', { n: num(ids.length) })),
          buttons(() => ({ job_ids: selection() }), 'selection'))
        : null,
      h('div', { class: 'bulk-row', 'data-role': 'bulk-filter' },
        h('span', { class: 'muted' }, t('bulk_all')), buttons(() => ({ filter: filter() }), 'filter')),
      progress);
  }

  // a bulk action already running (a reload, another tab): show its progress
  api.get('/bulk').then((ops) => { const running = ops.find((o) => o.status === 'running'); if (running) follow(running); }).catch(() => {});
  render();
  return { el, render, destroy() { clearTimeout(timer); } };
}
