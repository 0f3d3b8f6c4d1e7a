import { api } from '../api';
import { useSession } from '../App';
import { ActionButton, LoadError, Page, fmtTime, useLoad } from '../ui';

export interface HostedModel {
  id: string; name: string; description: string; created_at: string; created_by: string; params: number; size: number;
  plan: { name?: string; features: string[] | null; label: string; task: string; loss: string; optimizer: string; ops: number };
}

/** Models: the hosted models data scientists can train further (descriptions, never weights). */
export function ModelsPage() {
  const { can } = useSession();
  const models = useLoad(() => api<{ models: HostedModel[] }>('GET', '/api/v1/models').then((r) => r.models), []);
  return (
    <Page title="Models">
      <p className="muted">Models hosted on this gateway. A plan names one with <code>"model": "ID"</code> and carries only training settings; host one with <code>fedgrid admin models upload MODEL.json</code>.</p>
      <LoadError error={models.error} />
      {models.data && !models.data.length && <p className="muted">No models hosted.</p>}
      <div className="table-wrap" tabIndex={0}><table aria-label="Hosted models">
        <thead><tr><th>Name</th><th>ID</th><th>Task</th><th>Features</th><th>Parameters</th><th>Created</th><th><span className="sr-only">Actions</span></th></tr></thead>
        <tbody>{(models.data ?? []).map((m) => (
          <tr key={m.id} data-model={m.id}>
            <td>{m.name}{m.description && <div className="muted">{m.description}</div>}</td>
            <td><code>{m.id}</code></td>
            <td>{m.plan?.task || '—'}</td>
            <td>{m.plan?.features?.length ?? 0}</td>
            <td>{m.params.toLocaleString()}</td>
            <td>{fmtTime(m.created_at)}</td>
            <td className="actions">{can('can_upload_data') && (
              <ActionButton className="danger" label={`Delete model ${m.name}`} run={async () => { if (!confirm(`Delete model ${m.name}?`)) throw new Error('Cancelled.'); await api('DELETE', `/api/v1/models/${m.id}`); models.reload(); }} ok="Model deleted.">Delete</ActionButton>
            )}</td>
          </tr>
        ))}</tbody>
      </table></div>
    </Page>
  );
}
