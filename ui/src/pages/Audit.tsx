import { useState, type FormEvent } from 'react';
import { api, ApiError, type AuditEntry } from '../api';
import { LoadError, Page, fmtTime, short, useLoad } from '../ui';

export function AuditPage() {
  const [q, setQ] = useState({ action: '', after: '', limit: '200' });
  const [applied, setApplied] = useState(q);
  const entries = useLoad(() => {
    const p = new URLSearchParams();
    if (applied.action) p.set('action', applied.action);
    if (applied.after) p.set('after', applied.after);
    if (applied.limit) p.set('limit', applied.limit);
    return api<{ entries: AuditEntry[] }>('GET', `/api/v1/audit?${p}`).then((r) => r.entries);
  }, [applied]);
  const verify = useLoad(() => api<{ ok: boolean; entries: number }>('GET', '/api/v1/audit/verify'));
  const [text, setText] = useState('');
  const shown = (entries.data ?? []).filter((e) => !text || JSON.stringify(e).toLowerCase().includes(text.toLowerCase()));
  const broken = verify.error instanceof ApiError && verify.error.code === 'audit_broken';
  return (
    <Page title="Audit log">
      <div className={`verify ${verify.data?.ok ? 'ok' : broken ? 'bad' : ''}`} role="status" data-testid="audit-verify">
        {verify.loading && !verify.data ? 'Verifying the hash chain…'
          : verify.data?.ok ? `✔ The hash chain verifies: ${verify.data.entries} entries, each linked to the one before.`
          : broken ? `✘ The hash chain is broken: ${(verify.error as ApiError).message}` : null}
        {!broken && <LoadError error={verify.error} />}
        <button type="button" onClick={verify.reload}>Verify again</button>
      </div>
      <form className="card inline-form" onSubmit={(e: FormEvent) => { e.preventDefault(); setApplied(q); }} aria-label="Filter entries">
        <label>Action (or prefix ending in '.')<input name="action" value={q.action} onChange={(e) => setQ({ ...q, action: e.target.value })} placeholder="user. or auth.login" /></label>
        <label>After seq<input name="after" type="number" min="0" value={q.after} onChange={(e) => setQ({ ...q, after: e.target.value })} /></label>
        <label>Limit<input name="limit" type="number" min="1" max="1000" value={q.limit} onChange={(e) => setQ({ ...q, limit: e.target.value })} /></label>
        <button type="submit" className="primary">Filter</button>
        <label>Search shown entries<input name="text" value={text} onChange={(e) => setText(e.target.value)} /></label>
      </form>
      <LoadError error={entries.error} />
      <div className="table-wrap" tabIndex={0}><table className="audit">
        <thead><tr><th>Seq</th><th>Time</th><th>Actor</th><th>Action</th><th>Target</th><th>Detail</th><th>Hash</th></tr></thead>
        <tbody>{shown.map((e) => (
          <tr key={e.seq}><td>{e.seq}</td><td>{fmtTime(e.time)}</td><td><code>{short(e.actor) === '—' ? 'system' : short(e.actor)}</code></td><td><code>{e.action}</code></td><td><code>{e.target}</code></td>
            <td className="detail-cell">{e.detail ? <code>{JSON.stringify(e.detail)}</code> : ''}</td><td><code title={e.hash}>{short(e.hash, 6)}</code></td></tr>
        ))}</tbody>
      </table></div>
      {entries.data && entries.data.length >= Number(applied.limit || 100) && <p className="muted">Showing the first {applied.limit} entries; set "After seq" to {entries.data[entries.data.length - 1].seq} for more.</p>}
    </Page>
  );
}
