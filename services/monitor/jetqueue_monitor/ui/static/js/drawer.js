// The side drawer used for a queue's detail and a job's detail (full screen on a phone).

import { h } from './dom.js';
import { t } from './i18n.js';

/**
 * A drawer with a title row and a body. `onClose` runs on the close button and on Esc.
 * Returns {el, title, body, destroy}.
 */
export function drawer({ kind, onClose, label }) {
  const title = h('div', { class: 'drawer-title' });
  const body = h('div', { class: 'drawer-body' });
  const close = h('button', { type: 'button', class: 'btn btn-ghost drawer-close', 'data-role': 'close', 'aria-label': t('close'), title: `${t('close')} (Esc)` }, '✕');
  const back = h('button', { type: 'button', class: 'btn btn-ghost drawer-back', 'aria-label': t('back') }, `← ${t('back')}`);
  close.addEventListener('click', onClose);
  back.addEventListener('click', onClose);
  const el = h('aside', { class: `drawer drawer-${kind}`, role: 'dialog', 'aria-label': label, 'data-role': `${kind}-drawer`, tabindex: '-1' },
    h('div', { class: 'drawer-head' }, back, title, close), body);
  const onKey = (ev) => {
    if (ev.key === 'Escape' && !document.querySelector('dialog[open]')) { ev.preventDefault(); onClose(); }
  };
  document.addEventListener('keydown', onKey);
  document.body.classList.add('has-drawer');
  return {
    el, title, body,
    destroy() {
      document.removeEventListener('keydown', onKey);
      document.body.classList.remove('has-drawer');
      el.remove();
    },
  };
}
