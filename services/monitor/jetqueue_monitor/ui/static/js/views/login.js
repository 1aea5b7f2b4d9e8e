// The sign-in form. The server sets an HttpOnly session cookie and returns the CSRF token.

import * as api from '../api.js';
import { h, fill } from '../dom.js';
import { t, getLang, setLang } from '../i18n.js';

export function loginView(onSignedIn) {
  const error = h('p', { class: 'form-error', role: 'alert', 'data-role': 'login-error' });
  const user = h('input', { id: 'username', name: 'username', class: 'input', autocomplete: 'username', required: true, autofocus: true, maxlength: '200' });
  const pass = h('input', { id: 'password', name: 'password', type: 'password', class: 'input', autocomplete: 'current-password', required: true, maxlength: '500' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block' }, t('login'));
  const langBtn = h('button', {
    type: 'button', class: 'btn btn-ghost', 'data-role': 'lang',
    onclick: () => { setLang(getLang() === 'ko' ? 'en' : 'ko'); wrap.replaceWith(loginView(onSignedIn)); },
  }, t('language'));
  const form = h('form', { class: 'login-card', 'data-role': 'login', novalidate: false },
    h('div', { class: 'login-head' }, h('span', { class: 'brand-mark', 'aria-hidden': 'true' }, 'jq'), h('h1', {}, t('login_title')), langBtn),
    h('label', { class: 'field', for: 'username' }, h('span', {}, t('username')), user),
    h('label', { class: 'field', for: 'password' }, h('span', {}, t('password')), pass),
    error,
    submit);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    fill(error, '');
    try {
      await api.login(user.value.trim(), pass.value);
      await onSignedIn();
    } catch (err) {
      fill(error, err.status === 401 ? t('login_failed') : (err.detail || err.message));
      pass.select();
    } finally {
      submit.disabled = false;
    }
  });
  const wrap = h('div', { class: 'login-wrap' }, form);
  requestAnimationFrame(() => user.focus());
  return wrap;
}
