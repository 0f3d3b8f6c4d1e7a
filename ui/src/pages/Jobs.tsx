import { useState } from 'react';
import { api, type Job } from '../api';
import { useSession } from '../App';
import { ActionButton, LoadError, Page, fmtNumber, fmtTime, useLoad } from '../ui';

const STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled', 'under_review', 'denied'];
/** Jobs per page (the API's ?limit=; next_cursor fetches the next page). */
const PAGE = 25;

/** Jobs: every job (with can_triage_requests) or the caller's own, filtered by state; a job's detail; cancel. */
export function JobsPage() {
  const { can } = useSession();
  const [state, setState] = useState('');
  const [open, setOpen] = useState<string | null>(null);
  // cursors[i] starts page i+1 (page 0 has none).
  const [cursors, setCursors] = useState<string[]>([]);
  const cursor = cursors[cursors.length - 1] ?? '';
  const list = useLoad(() => {
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (state) q.set('state', state);
    if (cursor) q.set('cursor', cursor);
    return api<{ jobs: Job[]; next_cursor?: string }>('GET', `/api/v1/jobs?${q}`);
  }, [state, cursor], 5000);
  const jobs = { ...list, data: list.data?.jobs };
  return (
    <Page title="Jobs">
      <p className="muted">{can('can_triage_requests') ? 'Every job on this gateway, newest first.' : 'Your jobs, newest first.'}</p>
      <div className="inline-form">
        <label>State
          <select value={state} onChange={(e) => { setState(e.target.value); setCursors([]); }}>
            <option value="">any</option>
            {STATES.map((s) => <option key={s} value={s}>{s}</option>)}
          </select>
        </label>
      </div>
      <LoadError error={jobs.error} />
      {jobs.data && !jobs.data.length && <p className="muted">No jobs{state ? ` ${state}` : ''}.</p>}
      <div className="table-wrap" tabIndex={0}><table aria-label="Jobs">
        <thead><tr><th>Job</th><th>State</th><th>Dataset</th><th>Epoch</th><th>Created</th><th><span className="sr-only">Actions</span></th></tr></thead>
        <tbody>{(jobs.data ?? []).map((j) => (
          <tr key={j.id} data-job={j.id}>
            <td><button type="button" className="link" aria-expanded={open === j.id} onClick={() => setOpen(open === j.id ? null : j.id)}><code>{j.id}</code></button></td>
            <td><span className={`badge s-${j.state}`}>{j.state}</span></td>
            <td><code>{j.dataset_id}</code></td>
            <td>{j.progress?.epochs ? `${j.progress.epoch}/${j.progress.epochs}` : '—'}</td>
            <td>{fmtTime(j.created_at)}</td>
            <td className="actions">{(j.state === 'queued' || j.state === 'running') && (
              <ActionButton className="danger" label={`Cancel job ${j.id}`} run={async () => { await api('POST', `/api/v1/jobs/${j.id}/cancel`); jobs.reload(); }} ok={`Job ${j.id} cancelled.`}>Cancel</ActionButton>
            )}</td>
          </tr>
        ))}</tbody>
      </table></div>
      <nav className="pager" aria-label="Pages of jobs">
        <button type="button" disabled={!cursors.length} onClick={() => setCursors([])}>First page</button>
        <button type="button" disabled={!cursors.length} onClick={() => setCursors((c) => c.slice(0, -1))}>Previous page</button>
        <span>Page {cursors.length + 1}</span>
        <button type="button" disabled={!list.data?.next_cursor} onClick={() => setCursors((c) => [...c, list.data!.next_cursor!])}>Next page</button>
      </nav>
      {open && <JobDetail id={open} />}
    </Page>
  );
}

function JobDetail({ id }: { id: string }) {
  const job = useLoad(() => api<Job>('GET', `/api/v1/jobs/${id}`), [id], 5000);
  const j = job.data;
  return (
    <section className="card" aria-labelledby="job-h">
      <h2 id="job-h">Job <code>{id}</code></h2>
      <LoadError error={job.error} />
      {j && (
        <dl className="facts">
          <dt>State</dt><dd><span className={`badge s-${j.state}`}>{j.state}</span></dd>
          <dt>Dataset</dt><dd><code>{j.dataset_id}</code></dd>
          <dt>User</dt><dd><code>{j.user_id}</code></dd>
          <dt>Requester</dt><dd><code className="wrap">{j.requester || '—'}</code></dd>
          <dt>Attempt</dt><dd>{j.attempt}{j.node ? <> on <code className="wrap">{j.node}</code></> : null}</dd>
          <dt>Progress</dt><dd>{j.progress?.epochs ? `epoch ${j.progress.epoch} of ${j.progress.epochs}` : '—'}</dd>
          <dt>Metrics</dt><dd>{j.metrics ? Object.entries(j.metrics).filter(([, v]) => typeof v === 'number').map(([k, v]) => `${k} ${fmtNumber(v as number)}`).join(', ') || '—' : '—'}</dd>
          {j.error && <><dt>Error</dt><dd className="error-text">{j.error}</dd></>}
          <dt>Created</dt><dd>{fmtTime(j.created_at)}</dd>
          <dt>Finished</dt><dd>{fmtTime(j.finished_at)}</dd>
        </dl>
      )}
    </section>
  );
}
