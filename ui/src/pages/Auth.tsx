import { useState, type FormEvent } from 'react';
import { api, apiBase, setApiBase, setToken, type LoginResponse, type Status } from '../api';
import { errorText, useNotice } from '../ui';

export function SetupPage({ status, onDone }: { status: Status; onDone: () => void }) {
  const notice = useNotice();
  const [email, setEmail] = useState('');
  const [name, setName] = useState('');
  const [password, setPassword] = useState('');
  const [confirm, setConfirm] = useState('');
  const [setupToken, setSetupToken] = useState(() => new URLSearchParams(window.location.search).get('setup_token') ?? '');
  const [err, setErr] = useState('');
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setErr('');
    if (password !== confirm) { setErr('The two passwords differ.'); return; }
    setBusy(true);
    try {
      await api('POST', '/api/v1/setup', { email, password, name, setup_token: setupToken.trim() });
      const lr = await api<LoginResponse>('POST', '/api/v1/auth/login', { email, password });
      setToken(lr.token, lr.expires_at);
      notice.ok(`Owner ${email} created; you are logged in.`);
      onDone();
    } catch (e) {
      setErr(errorText(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form onSubmit={submit} aria-labelledby="setup-h">
      <h1 id="setup-h" tabIndex={-1}>Set up this gateway</h1>
      <p>This gateway (<strong>{status.name}</strong>) has no users yet. Create its <strong>Owner</strong>: the one account with every permission. You will then add compliance officers, administrators and data scientists from the Users page.</p>
      <label>Setup token<input name="setup_token" required value={setupToken} onChange={(e) => setSetupToken(e.target.value)} autoComplete="off" spellCheck={false} autoFocus /></label>
      <p className="muted small">The gateway printed it on its first start: the <code>setup-token</code> line of its output.</p>
      <label>Your name<input name="name" value={name} onChange={(e) => setName(e.target.value)} autoComplete="name" /></label>
      <label>Email<input name="email" type="email" required value={email} onChange={(e) => setEmail(e.target.value)} autoComplete="username" /></label>
      <label>Password<input name="password" type="password" required value={password} onChange={(e) => setPassword(e.target.value)} autoComplete="new-password" /></label>
      <label>Repeat the password<input name="confirm" type="password" required value={confirm} onChange={(e) => setConfirm(e.target.value)} autoComplete="new-password" /></label>
      {err && <p className="error-box" role="alert">{err}</p>}
      <button type="submit" className="primary" disabled={busy}>Create the Owner</button>
      <p className="muted small">Gateway peer ID: <code>{status.peer_id}</code></p>
    </form>
  );
}

export function LoginPage({ onLoggedIn, onApiChanged, apiOnly }: { onLoggedIn: () => void; onApiChanged: () => void; apiOnly?: boolean }) {
  const notice = useNotice();
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [base, setBase] = useState(apiBase());
  const [err, setErr] = useState('');
  const [busy, setBusy] = useState(false);
  const apiForm = (
    <details className="api-url" open={apiOnly}>
      <summary>Gateway API URL</summary>
      <form onSubmit={(e) => { e.preventDefault(); setApiBase(base); notice.ok(base ? `Using the API at ${base}.` : 'Using this page\'s own origin for the API.'); onApiChanged(); }}>
        <label>API URL (empty: this page's origin)<input name="api" type="url" placeholder="http://127.0.0.1:8420" value={base} onChange={(e) => setBase(e.target.value)} /></label>
        <button type="submit">Use this API</button>
      </form>
    </details>
  );
  if (apiOnly) return apiForm;
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setErr('');
    setBusy(true);
    try {
      const lr = await api<LoginResponse>('POST', '/api/v1/auth/login', { email, password });
      setToken(lr.token, lr.expires_at);
      notice.ok(`Logged in as ${lr.user.email} (${lr.user.role}).`);
      onLoggedIn();
    } catch (e) {
      setErr(errorText(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <form onSubmit={submit} aria-labelledby="login-h">
        <h1 id="login-h" tabIndex={-1}>Log in</h1>
        <label>Email<input name="email" type="email" required value={email} onChange={(e) => setEmail(e.target.value)} autoComplete="username" autoFocus /></label>
        <label>Password<input name="password" type="password" required value={password} onChange={(e) => setPassword(e.target.value)} autoComplete="current-password" /></label>
        {err && <p className="error-box" role="alert">{err}</p>}
        <button type="submit" className="primary" disabled={busy}>Log in</button>
      </form>
      {apiForm}
    </>
  );
}
