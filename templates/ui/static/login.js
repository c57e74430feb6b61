// Log in or sign up: the server sets the session cookie.
import { $, onSubmit, ApiError } from './lb.js';

// The server checked `next` (a path of this site: never `//host` or
// `/\host`, which browsers read as another site); checked again here.
const next = (() => {
  const n = document.querySelector('#auth-form')?.dataset.next || '';
  const sameOrigin = /^\/(?![\/\\])/.test(n) && !/[\\\s\x00-\x1f\x7f]/.test(n);
  return sameOrigin ? n : '/projects';
})();
// A SameSite=Strict session is not sent on a navigation another site started
// (coming back from a git vendor): if this browser has a session, go on once.
if (document.cookie.includes('lb_csrf=') && !sessionStorage.getItem('lb-retried')) {
  sessionStorage.setItem('lb-retried', '1');
  location.replace(next);
} else {
  sessionStorage.removeItem('lb-retried');
}
const form = $('#auth-form');
const mode = form.dataset.mode === 'signup' ? 'signup' : 'login';
onSubmit(form, async (data) => {
  const body = { username: data.get('username').trim(), password: data.get('password') };
  const res = await fetch('/ui/' + mode, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    credentials: 'same-origin',
    body: JSON.stringify(body),
  });
  if (!res.ok) {
    let e = null;
    try { e = (await res.json()).error; } catch { /* not JSON */ }
    throw new ApiError(res.status, e);
  }
  location.href = next;
});
