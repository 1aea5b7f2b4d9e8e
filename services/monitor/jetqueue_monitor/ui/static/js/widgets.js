// Small shared pieces: status chips, toasts, link helpers, table cells.

import { h } from './dom.js';
import { t } from './i18n.js';
import { href, linkClick } from './router.js';

const QUEUE_TONE = { Running: 'ok', Paused: 'warn', Degraded: 'bad' };
const JOB_TONE = { completed: 'ok', failed: 'bad', active: 'info', waiting: 'muted', scheduled: 'plan', cancelled: 'muted' };
const WORKER_TONE = { ONLINE: 'ok', DEGRADED: 'bad', OFFLINE: 'muted' };

export function queueChip(status) {
  return h('span', { class: `chip chip-${QUEUE_TONE[status] || 'muted'}`, 'data-status': status }, t(`status_${status}`));
}

export function jobChip(status) {
  return h('span', { class: `chip chip-${JOB_TONE[status] || 'muted'}`, 'data-status': status }, t(`js_${status}`));
}

export function workerChip(status) {
  return h('span', { class: `chip chip-${WORKER_TONE[status] || 'muted'}`, 'data-status': status }, t(`ws_${status}`));
}

/** An in-app link: a real href, navigated with pushState on a plain click. */
export function link(tab, params, attrs, ...children) {
  return h('a', { href: href(tab, params), onclick: linkClick, ...attrs }, ...children);
}

/** A table cell that carries its column name for the phone layout (tables become cards). */
export function td(label, content, attrs = {}) {
  return h('td', { 'data-label': label, ...attrs }, content);
}

let toastSeq = 0;
export function toast(message, tone = 'ok') {
  const box = document.getElementById('toasts');
  const el = h('div', { class: `toast toast-${tone}`, id: `toast-${++toastSeq}` }, message);
  box.append(el);
  setTimeout(() => el.remove(), tone === 'bad' ? 9000 : 5000);
}

export function errorText(err) {
  if (err && err.status === 403) return t('forbidden', { d: err.detail || '' });
  return t('failed_request', { d: (err && (err.detail || err.message)) || '?' });
}

/** A heading + muted "hint" pair. */
export function section(title, ...children) {
  return h('section', { class: 'panel-section' }, h('h3', {}, title), ...children);
}
