import { useState } from 'react';
import { api, type Dataset, type User } from '../api';
import { useSession } from '../App';
import { ActionButton, LoadError, useLoad } from '../ui';

interface Override { dataset_id: string; user_id: string; train?: boolean; auto_release?: boolean }

const tri = (v?: boolean) => (v === undefined ? 'default' : v ? 'yes' : 'no');
const fromTri = (s: string) => (s === 'default' ? null : s === 'yes');

/** Edit a dataset's description, tags and visibility; its per-user overrides; users' epsilon caps on it. */
export function DatasetEdit({ d, onChange }: { d: Dataset; onChange: () => void }) {
  const { can } = useSession();
  const [f, setF] = useState({ name: d.name, description: d.description, tags: (d.tags ?? []).join(', '), visibility: d.visibility });
  const users = useLoad(() => (can('can_create_users') ? api<{ users: User[] }>('GET', '/api/v1/users').then((r) => r.users) : Promise.resolve([] as User[])), []);
  const overrides = useLoad(() => api<{ overrides: Override[] }>('GET', `/api/v1/datasets/${d.id}/overrides`).then((r) => r.overrides), [d.id]);
  const [ov, setOv] = useState({ user: '', train: 'default', auto: 'default' });
  const [cap, setCap] = useState({ user: '', eps: '' });
  const who = (id: string) => users.data?.find((u) => u.id === id)?.email ?? id;
  const userSelect = (value: string, set: (v: string) => void, label: string) => (
    <label>{label}
      <select value={value} onChange={(e) => set(e.target.value)}>
        <option value="">choose a user</option>
        {(users.data ?? []).map((u) => <option key={u.id} value={u.id}>{u.email}</option>)}
      </select>
    </label>
  );
  return (
    <div className="grid2">
      <form className="card" aria-label={`Edit ${d.name}`} onSubmit={(e) => e.preventDefault()}>
        <h3>Description</h3>
        <label>Name<input value={f.name} onChange={(e) => setF({ ...f, name: e.target.value })} /></label>
        <label>Description<input value={f.description} onChange={(e) => setF({ ...f, description: e.target.value })} /></label>
        <label>Tags (comma-separated)<input value={f.tags} onChange={(e) => setF({ ...f, tags: e.target.value })} /></label>
        <label>Visibility
          <select value={f.visibility} onChange={(e) => setF({ ...f, visibility: e.target.value })}>
            <option value="public">public</option><option value="private">private (every result reviewed)</option>
          </select>
        </label>
        <ActionButton className="primary" run={async () => {
          await api('PATCH', `/api/v1/datasets/${d.id}`, { name: f.name, description: f.description, visibility: f.visibility, tags: f.tags.split(',').map((t) => t.trim()).filter(Boolean) });
          onChange();
        }} ok={`Saved ${f.name}.`}>Save dataset</ActionButton>
      </form>
      <div className="card">
        <h3>Per-user overrides</h3>
        <LoadError error={overrides.error} />
        {overrides.data && !overrides.data.length && <p className="muted">None: every user gets the dataset's defaults.</p>}
        {!!overrides.data?.length && (
          <div className="table-wrap" tabIndex={0}><table className="compact" aria-label={`Overrides on ${d.name}`}>
            <thead><tr><th>User</th><th>May train</th><th>Skips review</th></tr></thead>
            <tbody>{overrides.data.map((o) => <tr key={o.user_id}><td>{who(o.user_id)}</td><td>{tri(o.train)}</td><td>{tri(o.auto_release)}</td></tr>)}</tbody>
          </table></div>
        )}
        {can('can_create_users') && (
          <form className="inline-form" aria-label="Set an override" onSubmit={(e) => e.preventDefault()}>
            {userSelect(ov.user, (user) => setOv({ ...ov, user }), 'User')}
            <label>May train<select value={ov.train} onChange={(e) => setOv({ ...ov, train: e.target.value })}><option>default</option><option>yes</option><option>no</option></select></label>
            <label>Skips review<select value={ov.auto} onChange={(e) => setOv({ ...ov, auto: e.target.value })}><option>default</option><option>yes</option><option>no</option></select></label>
            <ActionButton disabled={!ov.user} run={async () => {
              await api('PUT', `/api/v1/datasets/${d.id}/overrides/${ov.user}`, { train: fromTri(ov.train), auto_release: fromTri(ov.auto) });
              overrides.reload();
            }} ok="Override saved.">Set override</ActionButton>
          </form>
        )}
        {can('can_manage_privacy_budget') && can('can_create_users') && (
          <>
            <h3>Epsilon cap</h3>
            <form className="inline-form" aria-label="Set a cap" onSubmit={(e) => e.preventDefault()}>
              {userSelect(cap.user, (user) => setCap({ ...cap, user }), 'User')}
              <label>Cap ε (empty: no cap)<input className="num" type="number" min="0" step="0.1" value={cap.eps} onChange={(e) => setCap({ ...cap, eps: e.target.value })} /></label>
              <ActionButton disabled={!cap.user} run={async () => {
                await api('PUT', `/api/v1/users/${cap.user}/caps/${d.id}`, { cap_epsilon: cap.eps === '' ? -1 : Number(cap.eps) });
              }} ok="Cap saved.">Set cap</ActionButton>
            </form>
          </>
        )}
      </div>
    </div>
  );
}
