import { createContext, useCallback, useContext, useEffect, useRef, useState, type ReactNode } from 'react';
import { ApiError } from './api';

// ---- notices: every action reports success or failure with the API's own message

export interface Notice { id: number; kind: 'ok' | 'error'; text: string; at: number }
interface NoticeApi { ok(text: string): void; error(e: unknown): void }
const NoticeCtx = createContext<NoticeApi>({ ok() {}, error() {} });

/** A failure as a person reads it: the API's own message, as a sentence; no codes. */
export function errorText(e: unknown): string {
  let msg = e instanceof Error ? e.message : String(e);
  if (e instanceof ApiError) {
    if (e.status === 401 && e.code !== 'invalid_credentials') msg = 'Your session has ended. Please log in again.';
    else if (e.status === 403) msg = `You are not allowed to do this: ${msg}`;
    else if (e.status === 429) msg = `${msg}. Wait a moment and try again`;
    else if (e.status >= 500) msg = `The gateway could not do this (${msg}). Try again; if it persists, check the gateway's log`;
  }
  msg = msg.trim();
  if (!msg) return 'Something went wrong.';
  msg = msg[0].toUpperCase() + msg.slice(1);
  return /[.!?]$/.test(msg) ? msg : `${msg}.`;
}

/** Numbers for people: whole numbers without decimals, others with at most four. */
export function fmtNumber(x: number): string {
  if (Number.isInteger(x)) return String(x);
  if (Math.abs(x) < 0.001) return x.toPrecision(3);
  return String(Number(x.toFixed(4)));
}

export function NoticeProvider({ children }: { children: ReactNode }) {
  const [list, setList] = useState<Notice[]>([]);
  const next = useRef(1);
  const push = useCallback((kind: Notice['kind'], text: string) => {
    const id = next.current++;
    setList((l) => [...l.slice(-2), { id, kind, text, at: Date.now() }]);
    setTimeout(() => setList((l) => l.filter((n) => n.id !== id)), kind === 'ok' ? 4000 : 20000);
  }, []);
  const apiv = useRef<NoticeApi>({ ok: (t) => push('ok', t), error: (e) => push('error', errorText(e)) });
  // Notices belong to the page they were made on: moving to another page
  // clears them, except those of the action that moved (made just before).
  useEffect(() => {
    const f = () => setList((l) => l.filter((n) => Date.now() - n.at < 1500));
    window.addEventListener('hashchange', f);
    return () => window.removeEventListener('hashchange', f);
  }, []);
  return (
    <NoticeCtx.Provider value={apiv.current}>
      {children}
      <div className="notices" aria-live="polite">
        {list.map((n) => (
          <div key={n.id} className={`notice notice-${n.kind}`} role={n.kind === 'error' ? 'alert' : 'status'} data-testid={`notice-${n.kind}`}>
            <span>{n.text}</span>
            <button type="button" className="link" aria-label="Dismiss" onClick={() => setList((l) => l.filter((x) => x.id !== n.id))}>×</button>
          </div>
        ))}
      </div>
    </NoticeCtx.Provider>
  );
}

export const useNotice = () => useContext(NoticeCtx);

// ---- loading data

export interface Loaded<T> { data?: T; error?: unknown; loading: boolean; reload: () => void }

/** Runs load on mount and on reload(); keeps the last good data while reloading. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[] = [], pollMs = 0): Loaded<T> {
  const [state, setState] = useState<{ data?: T; error?: unknown; loading: boolean }>({ loading: true });
  const [n, setN] = useState(0);
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    load().then(
      (data) => live && setState({ data, loading: false }),
      (error) => live && setState((s) => ({ data: s.data, error, loading: false })),
    );
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [n, ...deps]);
  useEffect(() => {
    if (!pollMs) return;
    const t = setInterval(() => setN((x) => x + 1), pollMs);
    return () => clearInterval(t);
  }, [pollMs]);
  return { ...state, reload: () => setN((x) => x + 1) };
}

export function LoadError({ error }: { error: unknown }) {
  if (!error) return null;
  return <p className="error-box" role="alert">{errorText(error)}</p>;
}

/** A button that runs an async action and reports it; disabled while running. */
export function ActionButton({ run, children, className, ok, label, disabled }: {
  run: () => Promise<unknown>; children: ReactNode; className?: string; ok?: string; label?: string; disabled?: boolean;
}) {
  const notice = useNotice();
  const [busy, setBusy] = useState(false);
  return (
    <button type="button" className={className} aria-label={label} disabled={busy || disabled} onClick={async () => {
      setBusy(true);
      try {
        await run();
        if (ok) notice.ok(ok);
      } catch (e) {
        notice.error(e);
      } finally {
        setBusy(false);
      }
    }}>{children}</button>
  );
}

export function Page({ title, actions, children }: { title: string; actions?: ReactNode; children: ReactNode }) {
  const h = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    document.title = `${title} · ${document.body.dataset.brand || 'fedgrid Admin'}`;
    h.current?.focus();
  }, [title]);
  return (
    <section className="page">
      <header className="page-head">
        <h1 tabIndex={-1} ref={h}>{title}</h1>
        {actions && <div className="page-actions">{actions}</div>}
      </header>
      {children}
    </section>
  );
}

export function fmtTime(s?: string) {
  if (!s || s.startsWith('0001-')) return '—';
  const d = new Date(s);
  return isNaN(d.getTime()) ? s : d.toLocaleString();
}

export function ago(s?: string): string {
  if (!s || s.startsWith('0001-')) return 'never';
  const sec = Math.round((Date.now() - new Date(s).getTime()) / 1000);
  if (sec < 60) return `${Math.max(sec, 0)} s ago`;
  if (sec < 3600) return `${Math.round(sec / 60)} min ago`;
  if (sec < 86400) return `${Math.round(sec / 3600)} h ago`;
  return `${Math.round(sec / 86400)} d ago`;
}

export const fmtEps = (x?: number) => (x === undefined || x === null || isNaN(x) ? '—' : x.toFixed(3).replace(/\.?0+$/, '') || '0');

export function short(id?: string, n = 8) {
  if (!id) return '—';
  return id.length > n + 4 ? `${id.slice(0, n)}…${id.slice(-4)}` : id;
}

// ---- charts (plain SVG; no chart library)

export const STATE_COLORS: Record<string, string> = {
  queued: '#8a94a6', running: '#2f7de1', succeeded: '#1f9d55', failed: '#d64545', cancelled: '#c9a227', pending: '#8a94a6',
};
const PALETTE = ['#2f7de1', '#d64545', '#1f9d55', '#c9a227', '#7b4fd6', '#e07b39', '#17a2b8'];

export interface Series { name: string; points: number[]; color?: string }

export function LineChart({ series, label, height = 180 }: { series: Series[]; label: string; height?: number }) {
  const w = 480, h = height, pad = 34;
  const all = series.flatMap((s) => s.points).filter((v) => isFinite(v));
  if (!all.length) return <p className="muted">No data points for {label}.</p>;
  const maxN = Math.max(...series.map((s) => s.points.length), 2);
  let lo = Math.min(...all), hi = Math.max(...all);
  if (hi === lo) { hi += 0.5; lo -= 0.5; }
  const x = (i: number) => pad + (i / (maxN - 1)) * (w - pad - 8);
  const y = (v: number) => 8 + (1 - (v - lo) / (hi - lo)) * (h - pad);
  return (
    <figure className="chart">
      <svg viewBox={`0 0 ${w} ${h}`} role="img" aria-label={label}>
        <line x1={pad} y1={h - pad + 8} x2={w - 8} y2={h - pad + 8} className="axis" />
        <line x1={pad} y1={8} x2={pad} y2={h - pad + 8} className="axis" />
        <text x={2} y={14} className="tick">{hi.toPrecision(3)}</text>
        <text x={2} y={h - pad + 8} className="tick">{lo.toPrecision(3)}</text>
        <text x={w - 8} y={h - 6} className="tick" textAnchor="end">{maxN} steps</text>
        {series.map((s, i) => (
          <polyline key={s.name} fill="none" strokeWidth={2} stroke={s.color ?? PALETTE[i % PALETTE.length]}
            points={s.points.map((v, j) => `${x(j)},${y(v)}`).join(' ')} />
        ))}
      </svg>
      <figcaption>{label}: {series.map((s, i) => <span key={s.name} className="legend"><i style={{ background: s.color ?? PALETTE[i % PALETTE.length] }} />{s.name}</span>)}</figcaption>
    </figure>
  );
}

export function StackedBars({ buckets, keys, label }: { buckets: { label: string; counts: Record<string, number> }[]; keys: string[]; label: string }) {
  const w = 480, h = 180, pad = 26;
  if (!buckets.length) return <p className="muted">No jobs yet.</p>;
  const max = Math.max(1, ...buckets.map((b) => keys.reduce((a, k) => a + (b.counts[k] ?? 0), 0)));
  const slot = (w - pad - 8) / buckets.length;
  const bw = Math.min(slot, 48);
  return (
    <figure className="chart">
      <svg viewBox={`0 0 ${w} ${h}`} role="img" aria-label={label}>
        <text x={2} y={14} className="tick">{max}</text>
        <line x1={pad} y1={h - pad} x2={w - 8} y2={h - pad} className="axis" />
        {buckets.map((b, i) => {
          let acc = 0;
          return (
            <g key={b.label}>
              {keys.map((k) => {
                const v = b.counts[k] ?? 0;
                if (!v) return null;
                const bh = (v / max) * (h - pad - 10);
                acc += bh;
                return <rect key={k} x={pad + i * slot + (slot - bw) / 2 + 2} width={Math.max(bw - 4, 1)} y={h - pad - acc} height={bh} fill={STATE_COLORS[k] ?? '#999'}><title>{`${b.label} ${k}: ${v}`}</title></rect>;
              })}
              {(buckets.length <= 12 || i % Math.ceil(buckets.length / 12) === 0) && <text x={pad + i * slot + slot / 2} y={h - 8} className="tick" textAnchor="middle">{b.label}</text>}
            </g>
          );
        })}
      </svg>
      <figcaption>{label}: {keys.map((k) => <span key={k} className="legend"><i style={{ background: STATE_COLORS[k] }} />{k}</span>)}</figcaption>
    </figure>
  );
}

export function HBars({ rows, label, unit = '' }: { rows: { name: string; value: number; max?: number; color?: string }[]; label: string; unit?: string }) {
  if (!rows.length) return <p className="muted">Nothing to show for {label}.</p>;
  const max = Math.max(1e-9, ...rows.map((r) => Math.max(r.value, r.max ?? 0)));
  return (
    <figure className="chart hbars" aria-label={label}>
      {rows.map((r) => (
        <div className="hbar" key={r.name}>
          <span className="hbar-name" title={r.name}>{r.name}</span>
          <span className="hbar-track">
            {r.max !== undefined && <span className="hbar-cap" style={{ width: `${(r.max / max) * 100}%` }} />}
            <span className="hbar-fill" style={{ width: `${(r.value / max) * 100}%`, background: r.color }} />
          </span>
          <span className="hbar-val">{fmtEps(r.value)}{r.max !== undefined ? ` / ${fmtEps(r.max)}` : ''}{unit}</span>
        </div>
      ))}
      <figcaption>{label}</figcaption>
    </figure>
  );
}
