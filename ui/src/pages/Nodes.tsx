import { useState } from 'react';
import { api, type Node } from '../api';
import { useSession } from '../App';
import { ActionButton, LoadError, Page, ago, fmtTime, useLoad } from '../ui';
import { nodeHealth } from './Dashboard';

export function NodesPage() {
  const { status } = useSession();
  const nodes = useLoad(() => api<{ nodes: Node[] }>('GET', '/api/v1/nodes').then((r) => r.nodes), [], 5000);
  const [ttl, setTtl] = useState('24');
  const [tok, setTok] = useState<{ token: string; expires_at: string } | null>(null);
  const addr = status.addrs.find((a) => a.includes('127.0.0.1') === false) ?? status.addrs[0] ?? '<gateway multiaddr>';
  return (
    <Page title="Nodes">
      <div className="card">
        <h2>Enrol a node</h2>
        <p>A join token is single-use. Run the printed command on the worker machine.</p>
        <div className="inline-form">
          <label>Valid for (hours)<input name="ttl" type="number" min="1" max="720" value={ttl} onChange={(e) => setTtl(e.target.value)} /></label>
          <ActionButton className="primary" run={async () => setTok(await api('POST', '/api/v1/nodes/join-tokens', { ttl_seconds: Math.round(Number(ttl) * 3600) }))} ok="Join token issued.">Issue join token</ActionButton>
        </div>
        {tok && (
          <div className="token" aria-live="polite">
            <div>Token (expires {fmtTime(tok.expires_at)}): <code data-testid="join-token">{tok.token}</code></div>
            <pre>fedgrid node --data ./node-data --gateway {addr} --join-token {tok.token}</pre>
            <button type="button" onClick={() => navigator.clipboard?.writeText(tok.token)}>Copy token</button>
          </div>
        )}
      </div>
      <LoadError error={nodes.error} />
      <h2>Enrolled nodes</h2>
      {nodes.data && !nodes.data.length && <p className="muted">No nodes enrolled yet.</p>}
      <div className="table-wrap" tabIndex={0}><table>
        <thead><tr><th>Peer ID</th><th>Health</th><th>Slots</th><th>Version</th><th>Enrolled</th><th>Last seen</th><th><span className="sr-only">Actions</span></th></tr></thead>
        <tbody>{(nodes.data ?? []).map((n) => { const h = nodeHealth(n); return (
          <tr key={n.peer_id} data-node={n.peer_id}>
            <td><code className="wrap">{n.peer_id}</code></td>
            <td><span className="badge" style={{ background: h.color, color: '#fff' }}>{h.label}</span></td>
            <td>{n.slots}</td><td>{n.version || '—'}</td><td>{fmtTime(n.enrolled_at)}</td><td>{ago(n.last_seen)}</td>
            <td className="actions"><ActionButton className="danger" run={async () => { if (!confirm(`Remove node ${n.peer_id}?`)) throw new Error('Cancelled.'); await api('DELETE', `/api/v1/nodes/${n.peer_id}`); nodes.reload(); }} ok="Node removed.">Remove</ActionButton></td>
          </tr>
        ); })}</tbody>
      </table></div>
    </Page>
  );
}
