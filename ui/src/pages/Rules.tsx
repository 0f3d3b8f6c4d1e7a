import { useState, type FormEvent } from 'react';
import { api } from '../api';
import { ActionButton, LoadError, fmtEps, fmtTime, useLoad, useNotice } from '../ui';

/** An approval rule (issue 7: /api/v1/rules): auto-approves DP-SGD releases on datasets with every tag. */
interface Rule {
  id: string; tags: string[]; roles?: string[]; max_epsilon: number; quota: number; used: number;
  expires_at?: string; disabled?: boolean; note?: string; created_at: string;
}

export function RulesPanel() {
  const notice = useNotice();
  const rules = useLoad(() => api<{ rules: Rule[] }>('GET', '/api/v1/rules').then((r) => r.rules ?? []));
  const [f, setF] = useState({ tags: '', roles: '', max: '1', quota: '10', expires: '', note: '' });
  const create = async (e: FormEvent) => {
    e.preventDefault();
    const split = (s: string) => s.split(',').map((x) => x.trim()).filter(Boolean);
    try {
      const body: Record<string, unknown> = { tags: split(f.tags), roles: split(f.roles), max_epsilon: Number(f.max), quota: Number(f.quota), note: f.note };
      if (f.expires) body.expires_at = new Date(f.expires).toISOString();
      await api('POST', '/api/v1/rules', body);
      notice.ok('Approval rule created.');
      rules.reload();
    } catch (err) { notice.error(err); }
  };
  return (
    <section className="card" aria-labelledby="rules-h">
      <h2 id="rules-h">Approval rules</h2>
      <p className="muted">A rule approves DP-SGD releases on datasets carrying every one of its tags, for the given roles, up to its epsilon, at most quota times. Plans without DP-SGD always come to this queue.</p>
      <LoadError error={rules.error} />
      {rules.data && rules.data.length > 0 && (
        <div className="table-wrap" tabIndex={0}><table className="compact">
          <thead><tr><th>Tags</th><th>Roles</th><th>Max ε</th><th>Used / quota</th><th>Expires</th><th>Note</th><th><span className="sr-only">Actions</span></th></tr></thead>
          <tbody>{rules.data.map((r) => (
            <tr key={r.id} className={r.disabled ? 'muted' : ''}>
              <td>{r.tags.map((t) => <span key={t} className="tag">{t}</span>)}</td><td>{r.roles?.length ? r.roles.join(', ') : 'any'}</td>
              <td>{fmtEps(r.max_epsilon)}</td><td>{r.used} / {r.quota}</td><td>{fmtTime(r.expires_at)}</td><td>{r.note}</td>
              <td className="actions">
                <ActionButton run={async () => { await api('PATCH', `/api/v1/rules/${r.id}`, { disabled: !r.disabled }); rules.reload(); }} ok={r.disabled ? 'Rule enabled.' : 'Rule disabled.'}>{r.disabled ? 'Enable' : 'Disable'}</ActionButton>
                <ActionButton className="danger" run={async () => { await api('DELETE', `/api/v1/rules/${r.id}`); rules.reload(); }} ok="Rule deleted.">Delete</ActionButton>
              </td>
            </tr>
          ))}</tbody>
        </table></div>
      )}
      <form className="form-grid" onSubmit={create} aria-label="Create an approval rule">
        <label>Dataset tags (all required)<input name="rule-tags" required value={f.tags} onChange={(e) => setF({ ...f, tags: e.target.value })} placeholder="medical, diabetes" /></label>
        <label>Requester roles (empty: any)<input name="rule-roles" value={f.roles} onChange={(e) => setF({ ...f, roles: e.target.value })} placeholder="Data Scientist" /></label>
        <label>Max ε per release<input name="rule-max" type="number" min="0" step="any" required value={f.max} onChange={(e) => setF({ ...f, max: e.target.value })} /></label>
        <label>Quota (releases)<input name="rule-quota" type="number" min="1" required value={f.quota} onChange={(e) => setF({ ...f, quota: e.target.value })} /></label>
        <label>Expires (optional)<input name="rule-expires" type="datetime-local" value={f.expires} onChange={(e) => setF({ ...f, expires: e.target.value })} /></label>
        <label>Note<input name="rule-note" value={f.note} onChange={(e) => setF({ ...f, note: e.target.value })} /></label>
        <div className="wide"><button type="submit">Create rule</button></div>
      </form>
    </section>
  );
}
