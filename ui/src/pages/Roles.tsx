import { useState, type FormEvent } from 'react';
import { api, PERMISSIONS, type Role } from '../api';
import { ActionButton, LoadError, Page, useLoad, useNotice } from '../ui';

const label = (p: string) => p.replace(/^can_/, '').replace(/_/g, ' ');

export function RolesPage() {
  const roles = useLoad(() => api<{ roles: Role[] }>('GET', '/api/v1/roles').then((r) => r.roles));
  const notice = useNotice();
  const [name, setName] = useState('');
  const create = async (e: FormEvent) => {
    e.preventDefault();
    try {
      await api('POST', '/api/v1/roles', { name, permissions: [] });
      notice.ok(`Created role ${name}; tick its permissions and save.`);
      setName('');
      roles.reload();
    } catch (err) { notice.error(err); }
  };
  return (
    <Page title="Roles">
      <p className="muted">Each row is a role, each column a permission. The Owner role holds every permission and cannot change.</p>
      <LoadError error={roles.error} />
      <div className="table-wrap" tabIndex={0}><table className="matrix">
        <thead><tr><th>Role</th>{PERMISSIONS.map((p) => <th key={p} scope="col"><span className="vert">{label(p)}</span></th>)}<th><span className="sr-only">Actions</span></th></tr></thead>
        <tbody>{(roles.data ?? []).map((r) => <RoleRow key={r.name + r.permissions.join()} r={r} onChange={roles.reload} />)}</tbody>
      </table></div>
      <form className="card inline-form" onSubmit={create}>
        <label>New role name<input name="role" required value={name} onChange={(e) => setName(e.target.value)} /></label>
        <button type="submit" className="primary">Create role</button>
      </form>
    </Page>
  );
}

function RoleRow({ r, onChange }: { r: Role; onChange: () => void }) {
  const [perms, setPerms] = useState(new Set(r.permissions));
  const owner = r.name === 'Owner';
  const dirty = perms.size !== r.permissions.length || r.permissions.some((p) => !perms.has(p));
  return (
    <tr>
      <th scope="row">{r.name}{r.default && <span className="muted small"> (default)</span>}</th>
      {PERMISSIONS.map((p) => (
        <td key={p} className="center">
          <input type="checkbox" aria-label={`${r.name}: ${label(p)}`} checked={perms.has(p)} disabled={owner}
            onChange={(e) => { const n = new Set(perms); if (e.target.checked) n.add(p); else n.delete(p); setPerms(n); }} />
        </td>
      ))}
      <td className="actions">
        {!owner && <ActionButton disabled={!dirty} run={async () => { await api('PATCH', `/api/v1/roles/${encodeURIComponent(r.name)}`, { permissions: PERMISSIONS.filter((p) => perms.has(p)) }); onChange(); }} ok={`Saved role ${r.name}.`}>Save</ActionButton>}
        {!r.default && <ActionButton className="danger" run={async () => { await api('DELETE', `/api/v1/roles/${encodeURIComponent(r.name)}`); onChange(); }} ok={`Deleted role ${r.name}.`}>Delete</ActionButton>}
      </td>
    </tr>
  );
}
