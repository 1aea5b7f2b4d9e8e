// The job drawer: what the job was and why it failed, raw error, attempts, artifacts; Retry, Run now, Cancel, Delete.

import * as api from '../api.js';
import { h, fill } from '../dom.js';
import { t, num, duration, when, clock, bytes, getLang, queueLabel, ago } from '../i18n.js';
import { patch } from '../router.js';
import { jobChip, toast, errorText, section } from '../widgets.js';
import { drawer } from '../drawer.js';
import { confirmDialog } from '../dialogs.js';

const FINAL = new Set(['completed', 'failed', 'cancelled']);
const CANCELLABLE = new Set(['scheduled', 'waiting', 'active']);
// what each action asks, says when done, and how its button looks
const ACTS = {
  retry: { path: 'retry', confirm: 'confirm_retry_job', ok: 'retry_ok', label: 'retry', tone: 'primary', icon: '↻' },
  promote: { path: 'promote', confirm: 'confirm_promote_job', ok: 'promote_ok', label: 'promote', tone: 'primary', icon: '▶' },
  cancel: { path: 'cancel', confirm: 'confirm_cancel_job', ok: 'cancel_ok', label: 'cancel_job', tone: 'danger', icon: '✕' },
  delete: { path: 'delete', confirm: 'confirm_delete_job', ok: 'delete_ok', label: 'delete_job', tone: 'danger', icon: '' },
};

function json(value) {
  return h('pre', { class: 'code' }, JSON.stringify(value, null, 2));
}

function details(key, summary, body, openKeys) {
  return h('details', { 'data-key': key, open: openKeys.has(key) }, h('summary', {}, summary), body);
}

function artifact(job, a) {
  const url = api.artifactUrl(job.job_id, a.name);
  const caption = h('figcaption', {}, h('span', { class: 'mono' }, a.name), ` · ${a.content_type} · ${bytes(a.size)} · `,
    h('a', { href: url, target: '_blank', rel: 'noopener noreferrer' }, t('open_raw')));
  if ((a.content_type || '').startsWith('image/')) {
    return h('figure', { class: 'artifact', 'data-artifact': a.name },
      h('img', { src: url, alt: a.name, loading: 'lazy', 'data-role': 'artifact-image' }), caption);
  }
  if ((a.content_type || '').startsWith('text/html')) {
    // sandbox with no allow-* at all: no scripts, no forms, no same-origin access; the server adds a CSP sandbox too.
    return h('figure', { class: 'artifact', 'data-artifact': a.name },
      h('iframe', { src: url, sandbox: '', title: a.name, referrerpolicy: 'no-referrer', loading: 'lazy', 'data-role': 'artifact-frame' }),
      caption, h('p', { class: 'muted small' }, t('snapshot_note')));
  }
  return h('figure', { class: 'artifact artifact-file', 'data-artifact': a.name },
    h('a', { href: url, download: a.name, class: 'btn btn-small' }, `⬇ ${t('download')}`), caption);
}

export function jobDrawer(id, ctx, onChanged) {
  const d = drawer({ kind: 'job', label: id, onClose: () => patch({ job: null }) });
  const content = h('div', { 'data-role': 'job-detail' });
  d.body.append(content);
  let job = null;
  let summaryLang = getLang();
  let lastKey = '';

  const load = api.newest(() => api.get(`/jobs/${api.enc(id)}`),
    (got) => { job = got; render(); },
    (err) => fill(content, h('p', { class: 'bad', 'data-role': 'job-error' }, errorText(err))));

  async function act(kind) {
    const a = ACTS[kind];
    const yes = await confirmDialog({ title: t(a.label), message: t(a.confirm), confirmLabel: t(a.label), tone: a.tone });
    if (!yes) return;
    try {
      await api.post(`/jobs/${api.enc(id)}/${a.path}`);
      toast(t(a.ok));
    } catch (err) {
      toast(errorText(err), 'bad');
    }
    if (kind === 'delete') patch({ job: null });
    else await load();
    onChanged();
  }

  function actions() {
    const kinds = [];
    if (job.status === 'failed') kinds.push('retry');
    if (job.status === 'scheduled') kinds.push('promote');
    if (CANCELLABLE.has(job.status)) kinds.push('cancel');
    if (job.status !== 'active' && api.can('admin')) kinds.push('delete');
    const buttons = kinds.map((k) => h('button', {
      type: 'button', class: `btn ${ACTS[k].tone === 'primary' ? 'btn-primary' : 'btn-danger-outline'}`, 'data-action': k, onclick: () => act(k),
    }, `${ACTS[k].icon ? `${ACTS[k].icon} ` : ''}${t(ACTS[k].label)}`));
    return buttons.length ? h('div', { class: 'drawer-actions', 'data-role': 'job-actions' }, buttons) : null;
  }

  function render(force = false) {
    const key = JSON.stringify([job, summaryLang, ctx.state.queues.length]);
    if (!force && key === lastKey) return;
    lastKey = key;
    const openKeys = new Set([...content.querySelectorAll('details[open]')].map((x) => x.dataset.key));
    const queue = ctx.state.queues.find((q) => q.name === job.queue);
    fill(d.title,
      h('h2', { id: 'job-title' }, job.name || '?'),
      h('div', { class: 'drawer-sub' }, jobChip(job.status), ' ', h('span', { class: 'mono muted select-all', 'data-role': 'job-id' }, job.job_id)));

    const langToggle = h('div', { class: 'seg', role: 'group', 'aria-label': t('summary') },
      ['ko', 'en'].map((l) => h('button', {
        type: 'button', class: 'seg-btn', 'aria-pressed': String(summaryLang === l), 'data-lang': l,
        onclick: () => { summaryLang = l; render(true); },
      }, l === 'ko' ? '한국어' : 'English')));
    const summaryText = (job.summary && (job.summary[summaryLang] || job.summary.en)) || '';

    const facts = [
      [t('f_queue'), queue ? `${queueLabel(queue)} (${job.queue})` : job.queue],
      [t('f_type'), job.name],
      [t('f_level'), job.level === null || job.level === undefined ? '–' : t('level_n', { n: job.level })],
      [t('f_user'), job.user_id || '–'],
      [t('f_attempts'), `${num(job.attempts_made)} / ${num(job.max_attempts)}`],
      [t('f_worker'), job.worker_id || '–'],
      [t('f_duration'), duration(job.duration_ms)],
      [t('f_progress'), job.progress === null || job.progress === undefined ? '–' : `${num(job.progress)}%`],
      [t('f_created'), when(job.created_at)],
      job.run_at ? [t('f_run_at'), h('span', { 'data-role': 'run-at' }, `${when(job.run_at)} (${ago(job.run_at)})`)] : null,
      [t('f_started'), when(job.started_at)],
      [t('f_finished'), when(job.finished_at)],
    ];

    const attempts = job.attempts || [];
    const blocks = [
      h('section', { class: `summary summary-${job.status}` },
        h('div', { class: 'summary-head' }, h('h3', {}, t('summary')), langToggle),
        h('p', { 'data-role': 'summary', lang: summaryLang }, summaryText)),
      h('dl', { class: 'facts' }, facts.filter(Boolean).map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v)))),
    ];
    if (job.error) {
      blocks.push(section(t('col_error'),
        h('p', { class: 'error-line', 'data-role': 'error-line' }, job.error.split('\n')[0]),
        details('raw', t('raw_error'), h('pre', { class: 'code', 'data-role': 'raw-error' }, job.error), openKeys)));
    }
    blocks.push(section(t('attempts_history'), attempts.length
      ? h('table', { class: 'table table-attempts', 'data-role': 'attempts' },
        h('thead', {}, h('tr', {}, ['#', t('col_status'), t('f_worker'), t('f_started'), t('col_duration'), t('col_error')].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, attempts.map((a) => h('tr', { 'data-attempt': a.attempt },
          h('td', { 'data-label': '#' }, t('attempt_n', { n: a.attempt })),
          h('td', { 'data-label': t('col_status') }, jobChip(a.status)),
          h('td', { 'data-label': t('f_worker'), class: 'mono small' }, a.worker_id || '–'),
          h('td', { 'data-label': t('f_started'), title: when(a.started_at) }, clock(a.started_at)),
          h('td', { 'data-label': t('col_duration'), class: 'num' }, duration(a.duration_ms)),
          h('td', { 'data-label': t('col_error'), class: a.error ? 'bad small' : 'muted' }, a.error ? a.error.split('\n')[0].slice(0, 200) : '–')))))
      : h('p', { class: 'muted' }, t('no_attempts'))));
    const payloads = 'data' in job || 'artifacts' in job;
    if (!payloads) {
      blocks.push(h('p', { class: 'note', 'data-role': 'payload-hidden' }, t('payload_hidden')));
    } else {
      if (job.artifacts && job.artifacts.length) {
        blocks.push(section(t('artifacts'), h('div', { class: 'artifacts', 'data-role': 'artifacts' }, job.artifacts.map((a) => artifact(job, a)))));
      }
      blocks.push(details('data', t('data'), json(job.data ?? null), openKeys));
      if (job.result !== undefined && job.result !== null) blocks.push(details('result', t('result'), json(job.result), openKeys));
    }
    if (api.can('operator')) blocks.push(actions());
    fill(content, blocks);
  }

  fill(content, h('p', { class: 'muted loading' }, '…'));
  load();
  return {
    id,
    el: d.el,
    poll() { if (job && !FINAL.has(job.status)) load(); },
    tick() { if (job) render(); },
    destroy() { load.drop(); d.destroy(); },
  };
}
