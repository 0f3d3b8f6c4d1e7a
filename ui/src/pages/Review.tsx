import { useState } from 'react';
import { api, type Dataset, type Job, type Plan, type ReviewRequest, type User } from '../api';
import { useSession } from '../App';
import { RulesPanel } from './Rules';
import { ActionButton, LineChart, LoadError, Page, fmtEps, fmtTime, short, useLoad, useNotice } from '../ui';

const eps = (r: ReviewRequest) => r.epsilon ?? (r.epsilon_micro_eps !== undefined ? r.epsilon_micro_eps / 1e6 : undefined);
const amount = eps;
const counts = (m?: Record<string, number>) => (m && Object.keys(m).length ? Object.entries(m).map(([k, v]) => `${v} ${k}`).join(', ') : 'none');

export function ReviewPage() {
  const { can } = useSession();
  const [state, setState] = useState('pending');
  const reqs = useLoad(() => api<{ requests: ReviewRequest[] }>('GET', '/api/v1/requests').then((r) => r.requests ?? []), [], 5000);
  const datasets = useLoad(() => api<{ datasets: Dataset[] }>('GET', '/api/v1/datasets').then((r) => r.datasets));
  const [open, setOpen] = useState<string | null>(null);
  const all = reqs.data ?? [];
  const shown = all.filter((r) => state === 'all' || r.state === state);
  const dsName = (id?: string) => datasets.data?.find((d) => d.id === id)?.name ?? short(id);
  const dsOf = (r: ReviewRequest) => r.dataset?.name ?? dsName(r.dataset?.id);
  return (
    <Page title="Review queue" actions={
      <label className="inline">Show <select name="state" value={state} onChange={(e) => setState(e.target.value)}>
        <option value="pending">pending</option><option value="approved">approved</option><option value="denied">denied</option><option value="withdrawn">withdrawn</option><option value="all">all</option></select></label>}>
      <LoadError error={reqs.error} />
      {reqs.data && !shown.length && <p className="muted">No {state === 'all' ? '' : state} requests.</p>}
      <ul className="requests">
        {shown.map((r) => (
          <li key={r.id} className="card request" data-request={r.id}>
            <button type="button" className="request-head" aria-expanded={open === r.id} onClick={() => setOpen(open === r.id ? null : r.id)}>
              <span className={`badge k-${r.kind}`}>{r.kind}</span>
              <span className="grow">{summary(r, dsOf(r))}{r.user_email && <span className="muted"> · by {r.user_email}</span>}</span>
              <span className={`badge r-${r.state}`}>{r.state}</span>
              <span className="muted small">{fmtTime(r.created_at)}</span>
            </button>
            {(open === r.id || (shown.length === 1 && open === null)) && <RequestDetail r={r} all={all} dsName={dsName} ds={dsOf(r)} onDecided={reqs.reload} />}
          </li>
        ))}
      </ul>
      {can('can_edit_settings') && <RulesPanel />}
    </Page>
  );
}

function summary(r: ReviewRequest, ds: string) {
  switch (r.kind) {
    case 'release': return <>Release the result of job <code>{short(r.job_id)}</code> on <strong>{ds}</strong> · ε {fmtEps(eps(r))}</>;
    case 'budget': return <>{fmtEps(amount(r))} ε more budget{r.dataset ? <> for <strong>{ds}</strong></> : null}</>;
    case 'permission': return <>Permission <code>{r.permission}</code> on <strong>{ds}</strong></>;
    default: return <>{r.kind} request</>;
  }
}

function RequestDetail({ r, all, dsName, ds, onDecided }: { r: ReviewRequest; all: ReviewRequest[]; dsName: (id?: string) => string; ds: string; onDecided: () => void }) {
  const { can } = useSession();
  const notice = useNotice();
  const [reason, setReason] = useState('');
  const job = useLoad(() => (r.job_id && (!r.plan || !r.metrics) ? api<Job>('GET', `/api/v1/jobs/${r.job_id}`) : Promise.resolve(null)), [r.id]);
  const history = useLoad(() => api<{ jobs: Job[] }>('GET', `/api/v1/jobs?user_id=${encodeURIComponent(r.user_id)}`).then((x) => x.jobs), [r.user_id]);
  const ledger = useLoad(() => (can('can_manage_privacy_budget') ? api<{ user: User }>('GET', `/api/v1/users/${r.user_id}/ledger`).then((x) => x.user) : Promise.resolve(null)), [r.user_id]);
  const plan = r.plan ?? job.data?.plan;
  const metrics = r.metrics ?? job.data?.metrics;
  const u = ledger.data;
  const h = r.history;
  const pastRequests = all.filter((x) => x.user_id === r.user_id && x.id !== r.id);
  const decide = async (approve: boolean) => {
    if (approve) {
      await api('POST', `/api/v1/requests/${r.id}/approve`, reason.trim() ? { reason } : {});
      notice.ok(`Approved ${r.kind} request ${short(r.id)}.`);
    } else {
      if (!reason.trim()) throw new Error('Give a reason for the denial; the requester sees it.');
      await api('POST', `/api/v1/requests/${r.id}/deny`, { reason });
      notice.ok(`Denied ${r.kind} request ${short(r.id)}.`);
    }
    onDecided();
  };
  return (
    <div className="request-body">
      <div className="grid2">
        <section>
          <h3>Requester</h3>
          <p>{r.user_email || u ? <><strong>{r.user_email ?? u?.email}</strong> ({r.user_role ?? u?.role})</> : <code>{short(r.user_id, 12)}</code>}{r.requester && <> · peer <code>{short(r.requester, 12)}</code></>}</p>
          {r.reason && <p>Their reason: <q>{r.reason}</q></p>}
          {(h || u) && <p>Budget left <strong>{fmtEps((h ?? u)!.budget_epsilon)} ε</strong> · reserved {fmtEps((h ?? u)!.reserved_epsilon)} · spent {fmtEps((h ?? u)!.spent_epsilon)}{h?.dataset_used_epsilon !== undefined ? <> · {fmtEps(h.dataset_used_epsilon)} ε used on {ds}</> : null}</p>}
          {h && <p className="small">Past requests: {counts(h.requests)} · releases: {counts(h.releases)}</p>}
        </section>
        <section>
          <h3>Privacy cost</h3>
          {r.kind === 'release' ? (
            <>
              <p className="big">ε = {fmtEps(eps(r))}{r.delta ? <>, δ = {r.delta}</> : null}</p>
              <p className="muted">{r.guarantee || (r.dp ? 'Differentially private training (DP-SGD).' : 'No formal differential-privacy guarantee.')}</p>
            </>
          ) : r.kind === 'budget' ? <p className="big">+{fmtEps(amount(r))} ε</p> : <p>None directly; grants <code>{r.permission}</code> on {ds}.</p>}
        </section>
      </div>
      {r.kind === 'release' && <>
        <h3>Plan{plan?.name ? `: ${plan.name}` : ''}</h3>
        {plan ? <PlanTable plan={plan} /> : r.plan_table ? null : <p className="muted">No plan attached.</p>}
        {r.plan_table && <details><summary>The gateway's plan summary</summary><pre className="plan-table">{r.plan_table}</pre></details>}
        {r.error ? <>
          <h3>Outcome: the job failed</h3>
          <p className="muted">Releasing it shows the requester this error as it is here (and charges the epsilon as for a model).</p>
          <pre className="plan-table" data-testid="release-error">{r.error}</pre>
        </> : <>
          <h3>Metrics</h3>
          <Metrics metrics={metrics} />
        </>}
      </>}
      <h3>Requester's history</h3>
      <LoadError error={history.error} />
      <div className="table-wrap" tabIndex={0}><table className="compact">
        <thead><tr><th>Job</th><th>Dataset</th><th>State</th><th>Release</th><th>Created</th></tr></thead>
        <tbody>{(history.data ?? []).filter((j) => !j.parent_id).slice(0, 10).map((j) => (
          <tr key={j.id}><td><code>{short(j.id)}</code>{j.id === r.job_id && ' (this one)'}</td><td>{dsName(j.dataset_id)}</td><td>{j.state}</td><td>{(j as Job & { release?: string }).release ?? '—'}</td><td>{fmtTime(j.created_at)}</td></tr>
        ))}</tbody>
      </table></div>
      {pastRequests.length > 0 && <p className="muted">Earlier requests: {pastRequests.map((x) => `${x.kind} ${x.state}`).join(', ')}.</p>}
      {r.decision && r.state === 'withdrawn' && <p className="decision">Withdrawn by the requester at {fmtTime(r.decision.at)}{r.decision.reason ? <>: <q>{r.decision.reason}</q></> : null}</p>}
      {r.decision && r.state !== 'withdrawn' && <p className="decision">Decided {r.decision.approved ? 'approved' : 'denied'} by <code>{r.decision.reviewer_email ?? short(r.decision.reviewer, 12)}</code>{r.decision.charged_epsilon ? ` (charged ε ${fmtEps(r.decision.charged_epsilon)})` : ''} at {fmtTime(r.decision.at)}{r.decision.reason ? <>: <q>{r.decision.reason}</q></> : null}</p>}
      {r.state === 'pending' && (
        <div className="decide">
          <ActionButton className="primary approve" run={() => decide(true)}>Approve</ActionButton>
          <label className="grow">Reason (required to deny; optional note when approving)<input name="deny-reason" value={reason} onChange={(e) => setReason(e.target.value)} placeholder="e.g. the model could memorise rare rows" /></label>
          <ActionButton className="danger" run={() => decide(false)}>Deny</ActionButton>
        </div>
      )}
    </div>
  );
}

const count = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** The plan as a readable table: preprocessing, each forward op with its parameters' shapes, the loss and the training settings. */
export function PlanTable({ plan }: { plan: Plan }) {
  const params = plan.params ?? {};
  const total = Object.values(params).reduce((a, p) => a + count(p.shape), 0);
  return (
    <>
      <p>{plan.model ? <>Trains the hosted model <code>{plan.model}</code>. </> : null}Features: {(plan.features ?? []).map((f) => <code key={f} className="tag">{f}</code>)} → label <code>{plan.label}</code></p>
      <div className="table-wrap" tabIndex={0}><table className="compact plan">
        <thead><tr><th>#</th><th>Operation</th><th>Inputs</th><th>Output</th><th>Parameters</th></tr></thead>
        <tbody>
          {(plan.preprocess ?? []).map((p, i) => <tr key={`p${i}`} className="muted"><td>pre</td><td>{p.op}</td><td>{String(p.column ?? 'features')}</td><td>x</td><td></td></tr>)}
          {(plan.forward ?? []).map((op, i) => {
            const ps = op.in.filter((n) => params[n]);
            return (
              <tr key={i}><td>{i + 1}</td><td><strong>{op.op}</strong></td><td>{op.in.join(', ')}</td><td>{op.out}</td>
                <td>{ps.map((n) => <span key={n}>{n} [{params[n].shape.join('×')}] = {count(params[n].shape)} </span>)}</td></tr>
            );
          })}
          {plan.loss && <tr><td>loss</td><td><strong>{plan.loss.op}</strong></td><td>{plan.loss.in.join(', ')}</td><td></td><td></td></tr>}
        </tbody>
        <tfoot><tr><td colSpan={4}>Total trainable parameters</td><td>{total}</td></tr></tfoot>
      </table></div>
      <p className="small">Optimizer: {plan.optimizer?.name ?? '—'}{plan.optimizer?.learning_rate !== undefined ? ` (learning rate ${plan.optimizer.learning_rate})` : ''}
        {plan.train ? ` · training: ${Object.entries(plan.train).map(([k, v]) => `${k} ${v}`).join(', ')}` : ''}
        {plan.privacy?.dp_sgd ? ` · DP-SGD noise multiplier ${plan.privacy.dp_sgd.noise_multiplier}, clip ${plan.privacy.dp_sgd.max_grad_norm}, δ ${plan.privacy.delta ?? '—'}` : ' · no DP-SGD'}</p>
    </>
  );
}

function Metrics({ metrics }: { metrics?: Record<string, unknown> }) {
  if (!metrics || !Object.keys(metrics).length) return <p className="muted">No metrics reported.</p>;
  const curves = Object.entries(metrics).filter(([, v]) => Array.isArray(v) && (v as unknown[]).every((x) => typeof x === 'number')) as [string, number[]][];
  const scalars = Object.entries(metrics).filter(([, v]) => typeof v === 'number' || typeof v === 'string');
  const loss = curves.filter(([k]) => k.includes('loss'));
  const other = curves.filter(([k]) => !k.includes('loss'));
  return (
    <>
      <div className="grid2">
        {loss.length > 0 && <LineChart label="Loss per epoch" series={loss.map(([name, points]) => ({ name, points }))} />}
        {other.length > 0 && <LineChart label="Other metrics per epoch" series={other.map(([name, points]) => ({ name, points }))} />}
      </div>
      {scalars.length > 0 && <table className="compact kv"><tbody>{scalars.map(([k, v]) => <tr key={k}><th scope="row">{k.replace(/_/g, ' ')}</th><td>{typeof v === 'number' ? (Number.isInteger(v) ? v : v.toFixed(4)) : String(v)}</td></tr>)}</tbody></table>}
    </>
  );
}
