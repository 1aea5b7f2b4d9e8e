// Modal dialogs: a plain confirmation, and the danger dialog for Drain and Clean.
//
// Both use <dialog>.showModal(): focus stays inside, Esc cancels, and Cancel is
// focused first, so a stray Enter at 3 a.m. never confirms anything.

import { h, fill } from './dom.js';
import { t, num, pickLang } from './i18n.js';
import { errorText } from './widgets.js';

function open(dialog, focus) {
  document.body.append(dialog);
  dialog.showModal();
  focus.focus();
}

/** Ask yes/no (with `count`: the number of jobs it touches, in large figures). Resolves true only on the confirm button. */
export function confirmDialog({ title, message, confirmLabel, tone = 'primary', count = null }) {
  return new Promise((resolve) => {
    let answer = false;
    const cancel = h('button', { type: 'button', class: 'btn', 'data-role': 'cancel', autofocus: true }, t('cancel'));
    const ok = h('button', { type: 'button', class: `btn btn-${tone}`, 'data-role': 'confirm' }, confirmLabel || t('confirm'));
    const dialog = h(
      'dialog',
      { class: 'dialog', 'aria-labelledby': 'confirm-title', 'data-role': 'confirm-dialog' },
      h('h2', { id: 'confirm-title' }, title),
      count === null ? null : h('div', { class: 'danger-impact' }, h('span', {}, t('affected')), h('strong', { class: 'danger-count', 'data-role': 'count' }, num(count))),
      h('p', {}, message),
      h('div', { class: 'dialog-actions' }, cancel, ok),
    );
    cancel.addEventListener('click', () => dialog.close());
    ok.addEventListener('click', () => { answer = true; dialog.close(); });
    dialog.addEventListener('close', () => { dialog.remove(); resolve(answer); });
    open(dialog, cancel);
  });
}

/**
 * A form in a dialog. `fields`: [{key, label, kind: 'text'|'select'|'textarea'|'number', value, choices, readonly,
 * required}]; `check(values)` → an error message or null. Resolves the values, or null when cancelled.
 */
export function formDialog({ title, fields, submitLabel, check = () => null }) {
  return new Promise((resolve) => {
    let result = null;
    const inputs = {};
    const rows = fields.map((f) => {
      const id = `form-${f.key}`;
      const attrs = { id, class: 'input', 'data-field': f.key, readonly: f.readonly, required: f.required, disabled: f.readonly };
      let input;
      if (f.kind === 'select') {
        input = h('select', attrs, f.choices.map(([v, l]) => h('option', { value: v, selected: v === f.value }, l)));
      } else if (f.kind === 'textarea') {
        input = h('textarea', { ...attrs, rows: '4', spellcheck: 'false', class: 'input mono' }, f.value || '');
      } else {
        input = h('input', { ...attrs, type: f.kind === 'number' ? 'number' : 'text', value: f.value ?? '', autocomplete: 'off', spellcheck: 'false' });
      }
      inputs[f.key] = input;
      return h('label', { class: 'field', for: id }, h('span', {}, f.label), input);
    });
    const error = h('p', { class: 'dialog-error', role: 'alert', 'data-role': 'error' });
    const cancel = h('button', { type: 'button', class: 'btn', 'data-role': 'cancel' }, t('cancel'));
    const submit = h('button', { type: 'submit', class: 'btn btn-primary', 'data-role': 'submit' }, submitLabel || t('save'));
    const form = h('form', { method: 'dialog', class: 'danger-form' }, h('h2', { id: 'form-title' }, title), rows, error,
      h('div', { class: 'dialog-actions' }, cancel, submit));
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': 'form-title', 'data-role': 'form-dialog' }, form);
    cancel.addEventListener('click', () => dialog.close());
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const values = Object.fromEntries(Object.entries(inputs).map(([k, el]) => [k, el.value.trim()]));
      const problem = check(values);
      if (problem) { fill(error, problem); return; }
      result = values;
      dialog.close();
    });
    dialog.addEventListener('close', () => { dialog.remove(); resolve(result); });
    open(dialog, rows.length && !fields[0].readonly ? inputs[fields[0].key] : cancel);
  });
}

/**
 * The two-step danger dialog.
 *
 * ask(options) → the API's first answer {affected, word, token, warning{ko,en}};
 * run(token, word, reason, options) → the second call's result.
 * `options` are extra inputs (checkbox / select) that change what is affected: each change asks again.
 * Resolves the result, or null when cancelled.
 */
export function dangerDialog({ title, what, actionLabel, ask, run, options = [] }) {
  return new Promise((resolve) => {
    let result = null;
    let first = null;
    let running = false;
    const values = Object.fromEntries(options.map((o) => [o.key, o.initial]));

    const affected = h('strong', { class: 'danger-count', 'data-role': 'affected' }, '…');
    // The server's sentence: "This cannot be undone. N job(s) will be removed."
    const warning = h('p', { class: 'danger-undo', id: 'danger-cannot-undo', 'data-role': 'warning' }, t('cannot_undo'));
    const wordLabel = h('label', { for: 'danger-word', 'data-role': 'word-label' }, '');
    const word = h('input', {
      id: 'danger-word', name: 'confirm', type: 'text', autocomplete: 'off', autocapitalize: 'characters',
      spellcheck: 'false', class: 'input mono', 'data-role': 'word', 'aria-describedby': 'danger-cannot-undo',
    });
    const reason = h('input', { id: 'danger-reason', type: 'text', class: 'input', maxlength: '500', 'data-role': 'reason' });
    const message = h('p', { class: 'dialog-error', role: 'alert', 'data-role': 'error' });
    const cancel = h('button', { type: 'button', class: 'btn', 'data-role': 'cancel', autofocus: true }, t('cancel'));
    const confirm = h('button', { type: 'submit', class: 'btn btn-danger', 'data-role': 'confirm', disabled: true }, actionLabel);

    const optionInputs = options.map((o) => {
      if (o.kind === 'checkbox') {
        const input = h('input', { type: 'checkbox', id: `danger-${o.key}`, checked: o.initial });
        input.addEventListener('change', () => { values[o.key] = input.checked; refresh(); });
        return h('label', { class: 'check' }, input, ' ', o.label);
      }
      const select = h('select', { id: `danger-${o.key}`, class: 'input' },
        o.choices.map(([v, label]) => h('option', { value: v, selected: v === o.initial }, label)));
      select.addEventListener('change', () => { values[o.key] = select.value; refresh(); });
      return h('label', { class: 'field' }, h('span', {}, o.label), select);
    });

    const form = h(
      'form',
      { method: 'dialog', class: 'danger-form' },
      h('div', { class: 'danger-head' }, h('span', { class: 'danger-icon', 'aria-hidden': 'true' }, '⚠'),
        h('div', {}, h('h2', { id: 'danger-title' }, `${t('danger_title')} — ${title}`), h('p', { class: 'muted' }, what))),
      warning,
      h('div', { class: 'danger-impact' }, h('span', {}, t('affected')), affected),
      optionInputs,
      h('label', { class: 'field' }, h('span', {}, t('reason')), reason),
      h('div', { class: 'field' }, wordLabel, word),
      message,
      h('div', { class: 'dialog-actions' }, cancel, confirm),
    );
    const dialog = h('dialog', { class: 'dialog dialog-danger', 'aria-labelledby': 'danger-title', 'data-role': 'danger' }, form);

    const check = () => { confirm.disabled = !first || word.value !== first.word; };

    async function refresh(note) {
      first = null;
      check();
      affected.textContent = '…';
      try {
        first = await ask({ ...values });
        affected.textContent = num(first.affected);
        warning.textContent = pickLang(first.warning) || t('cannot_undo');
        wordLabel.textContent = t('type_to_confirm', { w: first.word });
        word.placeholder = first.word;
        fill(message, note || '');
      } catch (err) {
        fill(message, errorText(err));
      }
      check();
    }

    word.addEventListener('input', check);
    cancel.addEventListener('click', () => dialog.close());
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      if (confirm.disabled) return;
      confirm.disabled = true;
      cancel.disabled = true;
      running = true;
      try {
        result = await run(first.token, word.value, reason.value.trim() || undefined, { ...values });
        dialog.close();
      } catch (err) {
        running = false;
        cancel.disabled = false;
        if (err.status === 403 && /expired/i.test(err.detail || '')) {
          word.value = '';
          await refresh(t('expired'));
        } else {
          fill(message, errorText(err));
          check();
        }
      }
    });
    dialog.addEventListener('cancel', (ev) => { if (running) ev.preventDefault(); }); // Esc while it runs
    dialog.addEventListener('close', () => { dialog.remove(); resolve(result); });
    open(dialog, cancel);
    refresh();
  });
}
