import { createContext, useCallback, useContext, useEffect, useState, type ReactElement } from 'react';
import { api, apiBaseLabel, getToken, onUnauthorized, setToken, type Settings, type Status, type User } from './api';
import { Page, errorText, useLoad, useNotice } from './ui';
import { SetupPage, LoginPage } from './pages/Auth';
import { DashboardPage } from './pages/Dashboard';
import { ReviewPage } from './pages/Review';
import { UsersPage } from './pages/Users';
import { RolesPage } from './pages/Roles';
import { DatasetsPage } from './pages/Datasets';
import { NodesPage } from './pages/Nodes';
import { AuditPage } from './pages/Audit';
import { SettingsPage } from './pages/Settings';
import { JobsPage } from './pages/Jobs';
import { ModelsPage } from './pages/Models';

// Routing is by hash (#/users), so the built files work from any static host
// as well as from the gateway's /admin/.
function useHashRoute(): string {
  const get = () => window.location.hash.replace(/^#\/?/, '').split('?')[0] || '';
  const [r, setR] = useState(get);
  useEffect(() => {
    const f = () => setR(get());
    window.addEventListener('hashchange', f);
    return () => window.removeEventListener('hashchange', f);
  }, []);
  return r;
}

export const go = (route: string) => { window.location.hash = `#/${route}`; };

interface Session { me: User; status: Status; settings: Settings | null; reloadSettings: () => void; can: (p: string) => boolean }
const SessionCtx = createContext<Session | null>(null);
export const useSession = () => useContext(SessionCtx)!;

const PAGES: { route: string; title: string; perm?: string; el: () => ReactElement }[] = [
  { route: 'dashboard', title: 'Dashboard', el: () => <DashboardPage /> },
  { route: 'review', title: 'Review queue', perm: 'can_triage_requests', el: () => <ReviewPage /> },
  { route: 'users', title: 'Users', perm: 'can_create_users', el: () => <UsersPage /> },
  { route: 'roles', title: 'Roles', perm: 'can_edit_roles', el: () => <RolesPage /> },
  { route: 'datasets', title: 'Datasets', el: () => <DatasetsPage /> },
  { route: 'jobs', title: 'Jobs', el: () => <JobsPage /> },
  { route: 'models', title: 'Models', el: () => <ModelsPage /> },
  { route: 'nodes', title: 'Nodes', perm: 'can_manage_infrastructure', el: () => <NodesPage /> },
  { route: 'audit', title: 'Audit log', perm: 'can_edit_settings', el: () => <AuditPage /> },
  { route: 'settings', title: 'Settings', el: () => <SettingsPage /> },
];

function applyBranding(s: Settings | null, status: Status | null) {
  const name = s?.name || status?.name || 'fedgrid Admin';
  document.body.dataset.brand = name;
  document.documentElement.style.setProperty('--brand', s?.color || '#2f5fd0');
}

export function App() {
  const route = useHashRoute();
  const notice = useNotice();
  const [status, setStatus] = useState<Status | null>(null);
  const [statusErr, setStatusErr] = useState<unknown>(null);
  const [settings, setSettings] = useState<Settings | null>(null);
  const [me, setMe] = useState<User | null>(null);
  const [authChecked, setAuthChecked] = useState(false);
  const [menuOpen, setMenuOpen] = useState(false);

  const loadStatus = useCallback(() => {
    setStatusErr(null);
    api<Status>('GET', '/api/v1/status').then(setStatus, setStatusErr);
  }, []);
  const reloadSettings = useCallback(() => {
    // GET /api/v1/settings is public (branding shows on the login page); an
    // older gateway without it answers 404 and the app keeps its defaults.
    api<Settings>('GET', '/api/v1/settings').then(setSettings, () => setSettings(null));
  }, []);
  const loadMe = useCallback(() => {
    if (!getToken()) { setMe(null); setAuthChecked(true); return; }
    api<User>('GET', '/api/v1/auth/me').then(
      (u) => { setMe(u); setAuthChecked(true); },
      () => { setMe(null); setAuthChecked(true); },
    );
  }, []);

  useEffect(() => { loadStatus(); loadMe(); }, [loadStatus, loadMe]);
  // Settings exist once setup is done (before, every route but status and setup answers setup_required).
  useEffect(() => { if (status?.setup_done) reloadSettings(); }, [status?.setup_done, reloadSettings]);
  useEffect(() => onUnauthorized(() => { setMe(null); notice.error(new Error('Your session ended (token expired or revoked). Please log in again.')); }), [notice]);
  useEffect(() => applyBranding(settings, status), [settings, status]);
  useEffect(() => setMenuOpen(false), [route]);

  const brand = settings?.name || status?.name || 'fedgrid Admin';
  const logo = settings?.logo_url;

  if (statusErr && !status) {
    return (
      <main className="centered" id="main">
        <div className="card narrow">
          <h1>Cannot reach the gateway</h1>
          <p className="error-box" role="alert">{errorText(statusErr)}</p>
          <p>This app talks to the gateway API at <code>{apiBaseLabel()}</code>. Start one with <code>fedgrid gateway --data DIR</code> and open the address it prints followed by <code>/admin/</code>, or set the API URL below.</p>
          <LoginPage apiOnly onLoggedIn={() => {}} onApiChanged={loadStatus} />
          <button type="button" onClick={loadStatus}>Try again</button>
        </div>
      </main>
    );
  }
  if (!status || !authChecked) return <main className="centered" id="main"><p aria-busy="true">Connecting to the gateway…</p></main>;

  const header = (
    <div className="brand">
      {logo && <img src={logo} alt="" className="logo" />}
      <span>{brand}</span>
    </div>
  );

  if (!status.setup_done) {
    return (
      <main className="centered" id="main">
        <div className="card narrow">{header}<SetupPage status={status} onDone={() => { loadStatus(); loadMe(); go('dashboard'); }} /></div>
      </main>
    );
  }
  if (!me) {
    return (
      <main className="centered" id="main">
        <div className="card narrow">{header}<LoginPage onLoggedIn={() => { loadMe(); if (!route) go('dashboard'); }} onApiChanged={loadStatus} /></div>
      </main>
    );
  }

  const perms = new Set(me.permissions ?? []);
  const can = (p: string) => perms.has(p);
  const visible = PAGES.filter((p) => !p.perm || can(p.perm));
  const found = PAGES.find((p) => p.route === route);
  const current = found ?? (route ? null : PAGES[0]);
  const allowed = !current?.perm || can(current.perm);

  return (
    <SessionCtx.Provider value={{ me, status, settings, reloadSettings, can }}>
      <a className="skip" href="#main" onClick={(e) => { e.preventDefault(); document.querySelector<HTMLElement>('#main h1')?.focus(); }}>Skip to content</a>
      <div className="layout">
        <header className="topbar">
          {header}
          <button type="button" className="menu-toggle" aria-expanded={menuOpen} aria-controls="nav" onClick={() => setMenuOpen((o) => !o)}>Menu</button>
        </header>
        <nav id="nav" className={menuOpen ? 'open' : ''} aria-label="Main">
          <div className="nav-brand">{header}</div>
          <ul>
            {visible.map((p) => (
              <li key={p.route}><a href={`#/${p.route}`} aria-current={p.route === current?.route ? 'page' : undefined}>{p.title}{p.route === 'review' && <PendingBadge />}</a></li>
            ))}
          </ul>
          <div className="whoami">
            <div title={me.email}>{me.name || me.email}</div>
            <div className="muted">{me.role}</div>
            <button type="button" className="link" onClick={async () => {
              try { await api('POST', '/api/v1/auth/logout'); notice.ok('Logged out.'); } catch (e) { notice.error(e); }
              setToken(null); setMe(null);
            }}>Log out</button>
          </div>
        </nav>
        <main id="main">
          {!current ? <NotFoundPage route={route} /> : allowed ? current.el() : <div className="page"><h1 tabIndex={-1}>{current.title}</h1><p className="error-box" role="alert">Your role ({me.role}) lacks {current.perm}.</p></div>}
        </main>
      </div>
    </SessionCtx.Provider>
  );
}

/** The number of requests waiting for a reviewer, next to Review queue. */
function PendingBadge() {
  const pending = useLoad(() => api<{ requests: unknown[] }>('GET', '/api/v1/requests?state=pending').then((r) => r.requests.length), [], 10000);
  const n = pending.data ?? 0;
  if (!n) return null;
  return <span className="nav-badge" data-testid="pending-badge" aria-label={`${n} pending`}>{n}</span>;
}

function NotFoundPage({ route }: { route: string }) {
  return (
    <Page title="Page not found">
      <p>There is no page <code>#/{route}</code> in this app.</p>
      <p><a href="#/dashboard">Go to the dashboard</a></p>
    </Page>
  );
}
