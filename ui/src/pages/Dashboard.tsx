import { api, type Dataset, type Job, type Node, type User } from '../api';
import { useSession } from '../App';
import { HBars, LoadError, Page, StackedBars, ago, fmtTime, short, useLoad, STATE_COLORS } from '../ui';

const STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];

/** A node is healthy when seen within 30 s, stale within 5 min, else offline. */
export function nodeHealth(n: Node): { label: string; color: string } {
  const age = (Date.now() - new Date(n.last_seen).getTime()) / 1000;
  if (!n.last_seen || n.last_seen.startsWith('0001-')) return { label: 'never seen', color: '#5f6b7a' };
  if (age < 30) return { label: 'healthy', color: '#17733f' };
  if (age < 300) return { label: 'stale', color: '#8a6d00' };
  return { label: 'offline', color: '#b42f2f' };
}

/** Buckets jobs by creation time (hours for a day's span, else days), counting each job's current state. */
function jobBuckets(jobs: Job[]) {
  if (!jobs.length) return [];
  const times = jobs.map((j) => new Date(j.created_at).getTime());
  const lo = Math.min(...times), hi = Math.max(...times);
  const hourly = hi - lo < 2 * 86400e3;
  const step = hourly ? 3600e3 : 86400e3;
  const start = Math.floor(lo / step) * step;
  const n = Math.min(Math.floor((hi - start) / step) + 1, 60);
  const buckets = Array.from({ length: n }, (_, i) => {
    const d = new Date(start + i * step);
    return { label: hourly ? `${d.getHours()}:00` : `${d.getMonth() + 1}/${d.getDate()}`, counts: {} as Record<string, number> };
  });
  jobs.forEach((j, k) => {
    const i = Math.min(Math.floor((times[k] - start) / step), n - 1);
    buckets[i].counts[j.state] = (buckets[i].counts[j.state] ?? 0) + 1;
  });
  return buckets;
}

export function DashboardPage() {
  const { can, status } = useSession();
  const jobs = useLoad(() => api<{ jobs: Job[] }>('GET', '/api/v1/jobs').then((r) => r.jobs), [], 5000);
  const datasets = useLoad(() => api<{ datasets: Dataset[] }>('GET', '/api/v1/datasets').then((r) => r.datasets));
  const users = useLoad(() => (can('can_create_users') ? api<{ users: User[] }>('GET', '/api/v1/users').then((r) => r.users) : Promise.resolve(null)));
  const nodes = useLoad(() => (can('can_manage_infrastructure') ? api<{ nodes: Node[] }>('GET', '/api/v1/nodes').then((r) => r.nodes) : Promise.resolve(null)), [], 5000);

  const js = (jobs.data ?? []).filter((j) => !j.parent_id);
  const counts = Object.fromEntries(STATES.map((s) => [s, js.filter((j) => j.state === s).length]));
  const userName = (id: string) => users.data?.find((u) => u.id === id)?.email ?? short(id);

  return (
    <Page title="Dashboard">
      <p className="muted">Gateway <strong>{status.name}</strong> · peer <code>{short(status.peer_id, 12)}</code></p>
      <div className="stats">
        <Stat label="Datasets" value={datasets.data?.length} href="#/datasets" />
        <Stat label="Users" value={users.data?.length} href="#/users" />
        <Stat label="Nodes" value={nodes.data?.length} href="#/nodes" />
        <Stat label="Jobs" value={jobs.data ? js.length : undefined} />
        {STATES.map((s) => <Stat key={s} label={s} value={jobs.data ? counts[s] : undefined} color={STATE_COLORS[s]} />)}
      </div>
      <div className="grid2">
        <div className="card">
          <h2>Jobs by state over time</h2>
          <LoadError error={jobs.error} />
          <StackedBars label="Jobs created per period, by current state" keys={STATES} buckets={jobBuckets(js)} />
        </div>
        <div className="card">
          <h2>Epsilon spent per user</h2>
          {users.data === null ? <p className="muted">Needs can_create_users to list users.</p> : <>
            <LoadError error={users.error} />
            <HBars label="spent (bar) of budget (track), in ε" rows={(users.data ?? []).filter((u) => u.budget_epsilon > 0 || u.spent_epsilon > 0)
              .map((u) => ({ name: u.email, value: u.spent_epsilon, max: u.budget_epsilon + u.spent_epsilon + u.reserved_epsilon }))} />
          </>}
        </div>
        <div className="card">
          <h2>Node health</h2>
          {nodes.data === null ? <p className="muted">Needs can_manage_infrastructure to list nodes.</p> : <>
            <LoadError error={nodes.error} />
            {nodes.data && !nodes.data.length && <p className="muted">No nodes enrolled. <a href="#/nodes">Issue a join token</a>.</p>}
            <ul className="health">
              {(nodes.data ?? []).map((n) => { const h = nodeHealth(n); return (
                <li key={n.peer_id}><i style={{ background: h.color }} aria-hidden /> <code>{short(n.peer_id, 12)}</code> {h.label} · {n.slots} slot(s) · seen {ago(n.last_seen)}</li>
              ); })}
            </ul>
          </>}
        </div>
        <div className="card">
          <h2>Recent jobs</h2>
          <LoadError error={jobs.error} />
          {!js.length && <p className="muted">No jobs yet.</p>}
          <div className="table-wrap" tabIndex={0}><table>
            <thead><tr><th>Job</th><th>State</th><th>User</th><th>Created</th></tr></thead>
            <tbody>{js.slice(0, 8).map((j) => (
              <tr key={j.id}><td><code>{short(j.id)}</code></td><td><span className={`badge s-${j.state}`}>{j.state}</span></td><td>{userName(j.user_id)}</td><td>{fmtTime(j.created_at)}</td></tr>
            ))}</tbody>
          </table></div>
        </div>
      </div>
    </Page>
  );
}

function Stat({ label, value, href, color }: { label: string; value?: number; href?: string; color?: string }) {
  const body = <><span className="stat-val" style={color ? { color } : undefined}>{value ?? '—'}</span><span className="stat-label">{label}</span></>;
  return href ? <a className="stat" href={href}>{body}</a> : <div className="stat">{body}</div>;
}
