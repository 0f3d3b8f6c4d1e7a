import { useState, type FormEvent } from 'react';
import { api, type Role, type User } from '../api';
import { useSession } from '../App';
import { ActionButton, LoadError, Page, fmtEps, useLoad, useNotice } from '../ui';

// Accounts of these roles (and of any role with their powers) are the
// Owner's to create, change and delete: the gateway answers others with 403.
const privilegedPerms = ['can_create_users', 'can_edit_roles', 'can_triage_requests', 'can_manage_privacy_budget'];
const privilegedDefaults = ['Administrator', 'Compliance Officer'];

export function UsersPage() {
  const { can, me } = useSession();
  const isOwner = me.role === 'Owner';
  const users = useLoad(() => api<{ users: User[] }>('GET', '/api/v1/users').then((r) => r.users));
  // Roles are listed only with can_edit_roles; without it, offer the default role names.
  const roles = useLoad(() => (can('can_edit_roles')
    ? api<{ roles: Role[] }>('GET', '/api/v1/roles').then((r) => r.roles.map((x) => ({ name: x.name, privileged: x.permissions.some((p) => privilegedPerms.includes(p)) })))
    : Promise.resolve(['Data Scientist', ...privilegedDefaults].map((name) => ({ name, privileged: privilegedDefaults.includes(name) })))));
  const privileged = new Set((roles.data ?? []).filter((r) => r.privileged).map((r) => r.name));
  // Only the Owner gives privileged roles.
  const roleNames = (roles.data ?? []).filter((r) => r.name !== 'Owner' && (isOwner || !r.privileged)).map((r) => r.name);
  return (
    <Page title="Users">
      <CreateUser roles={roleNames} onCreated={users.reload} budget={can('can_manage_privacy_budget')} />
      <LoadError error={users.error} />
      <h2>All users</h2>
      <div className="table-wrap" tabIndex={0}><table className="users">
        <thead><tr><th>Email / name</th><th>Role</th><th>Budget ε (left)</th><th>Spent / reserved ε</th><th>Peer ID</th><th><span className="sr-only">Actions</span></th></tr></thead>
        <tbody>{(users.data ?? []).map((u) => <UserRow key={u.id} u={u} roles={roleNames} onChange={users.reload} budget={can('can_manage_privacy_budget')}
          ownerOnly={!isOwner && u.id !== me.id && (u.role === 'Owner' || privileged.has(u.role))} />)}</tbody>
      </table></div>
    </Page>
  );
}

function CreateUser({ roles, onCreated, budget }: { roles: string[]; onCreated: () => void; budget: boolean }) {
  const notice = useNotice();
  const [f, setF] = useState({ email: '', name: '', password: '', role: 'Data Scientist', budget: '', peer: '' });
  const set = (k: keyof typeof f) => (e: { target: { value: string } }) => setF({ ...f, [k]: e.target.value });
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    try {
      const body: Record<string, unknown> = { email: f.email, name: f.name, password: f.password, role: f.role, peer_id: f.peer.trim() };
      if (f.budget.trim()) body.budget_epsilon = Number(f.budget);
      const u = await api<User>('POST', '/api/v1/users', body);
      notice.ok(`Created ${u.email} as ${u.role}.`);
      setF({ email: '', name: '', password: '', role: f.role, budget: '', peer: '' });
      onCreated();
    } catch (err) {
      notice.error(err);
    }
  };
  return (
    <form className="card form-grid" onSubmit={submit} aria-label="Create a user">
      <h2>Create a user</h2>
      <label>Email<input name="email" type="email" required value={f.email} onChange={set('email')} /></label>
      <label>Name<input name="name" value={f.name} onChange={set('name')} /></label>
      <label>Password<input name="password" type="password" required value={f.password} onChange={set('password')} autoComplete="new-password" /></label>
      <label>Role<select name="role" value={f.role} onChange={set('role')}>{roles.map((r) => <option key={r}>{r}</option>)}</select></label>
      {budget && <label>Budget ε<input name="budget" type="number" min="0" step="any" value={f.budget} onChange={set('budget')} /></label>}
      <label className="wide"><span>Peer ID (from <code>fedgrid keygen</code>)</span><input name="peer_id" value={f.peer} onChange={set('peer')} placeholder="12D3KooW…" spellCheck={false} /></label>
      <div className="wide"><button type="submit" className="primary">Create user</button></div>
    </form>
  );
}

function UserRow({ u, roles, onChange, budget, ownerOnly }: { u: User; roles: string[]; onChange: () => void; budget: boolean; ownerOnly: boolean }) {
  const [role, setRole] = useState(u.role);
  const [eps, setEps] = useState(String(u.budget_epsilon));
  const [peer, setPeer] = useState(u.peer_id);
  const owner = u.role === 'Owner';
  const save = async () => {
    const body: Record<string, unknown> = {};
    if (role !== u.role) body.role = role;
    if (peer !== u.peer_id) body.peer_id = peer.trim();
    if (budget && Number(eps) !== u.budget_epsilon) body.budget_epsilon = Number(eps);
    if (!Object.keys(body).length) throw new Error(`Nothing changed for ${u.email}.`);
    await api('PATCH', `/api/v1/users/${u.id}`, body);
    onChange();
  };
  return (
    <tr data-user={u.email}>
      <td><div>{u.email}</div><div className="muted small">{u.name}</div></td>
      <td>{owner ? 'Owner' : <select aria-label={`Role of ${u.email}`} value={role} onChange={(e) => setRole(e.target.value)}>{[...new Set([...roles, u.role])].map((r) => <option key={r}>{r}</option>)}</select>}</td>
      <td>{budget ? <input aria-label={`Budget of ${u.email}`} className="num" type="number" min="0" step="any" value={eps} onChange={(e) => setEps(e.target.value)} /> : fmtEps(u.budget_epsilon)}</td>
      <td>{fmtEps(u.spent_epsilon)} / {fmtEps(u.reserved_epsilon)}</td>
      <td><input aria-label={`Peer ID of ${u.email}`} className="peer" value={peer} onChange={(e) => setPeer(e.target.value)} spellCheck={false} /></td>
      <td className="actions">
        {ownerOnly && <span className="muted small">Only the Owner changes this account.</span>}
        <ActionButton run={save} ok={`Saved ${u.email}.`} disabled={ownerOnly}>Save</ActionButton>
        {!owner && !ownerOnly && <ActionButton className="danger" run={async () => { if (!confirm(`Delete ${u.email}?`)) throw new Error('Cancelled.'); await api('DELETE', `/api/v1/users/${u.id}`); onChange(); }} ok={`Deleted ${u.email}.`}>Delete</ActionButton>}
      </td>
    </tr>
  );
}
