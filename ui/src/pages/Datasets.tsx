import { DatasetEdit } from './DatasetEdit';
import { useRef, useState, type FormEvent } from 'react';
import { api, ApiError, type Dataset, type UploadView } from '../api';
import { useSession } from '../App';
import { ActionButton, LoadError, Page, fmtTime, useLoad, useNotice } from '../ui';

export function DatasetsPage() {
  const { can } = useSession();
  const ds = useLoad(() => api<{ datasets: Dataset[] }>('GET', '/api/v1/datasets').then((r) => r.datasets), [], 5000);
  const [open, setOpen] = useState<string | null>(null);
  return (
    <Page title="Datasets">
      {can('can_upload_data') && <Upload onDone={ds.reload} />}
      <LoadError error={ds.error} />
      <h2>Datasets on this gateway</h2>
      {ds.data && !ds.data.length && <p className="muted">No datasets yet.</p>}
      <div className="table-wrap" tabIndex={0}><table>
        <thead><tr><th>Name</th><th>Tags</th><th>Visibility</th><th>Rows × columns</th><th>Indexing (DHT)</th><th>Uploaded</th><th><span className="sr-only">Actions</span></th></tr></thead>
        <tbody>{(ds.data ?? []).map((d) => (
          <DatasetRow key={d.id} d={d} open={open === d.id} toggle={() => setOpen(open === d.id ? null : d.id)} canWrite={can('can_upload_data')} onChange={ds.reload} />
        ))}</tbody>
      </table></div>
    </Page>
  );
}

type Progress = { done: number; total: number; rate: number; note?: string };

function fmtBytes(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(2)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} B`;
}

const chunkBytes = 8 << 20;
const maxFailures = 8;

// sendFile sends a file through the resumable upload API, slice by slice
// (the browser reads each slice from disk; the file is never whole in
// memory), and retries a failed chunk from the offset the gateway reports.
async function sendFile(file: File, meta: Record<string, unknown>, progress: (p: Progress) => void, cancelled: () => boolean): Promise<Dataset> {
  const format = /\.(parquet|pq)$/i.test(file.name) ? 'parquet' : 'csv';
  // An unfinished upload of the same file (same name, size and format), left
  // by a closed page or a lost connection, goes on from its offset.
  const mine = await api<{ uploads: UploadView[] }>('GET', '/api/v1/uploads');
  const earlier = mine.uploads.find((u) => u.state !== 'finished' && !u.dataset_id && u.size === file.size && u.format === format && u.name === meta.name);
  let up = earlier ?? await api<UploadView>('POST', '/api/v1/uploads', { size: file.size, format, ...meta });
  if (earlier) progress({ done: earlier.offset, total: file.size, rate: 0, note: `resuming an earlier upload at ${fmtBytes(earlier.offset)}` });
  const chunk = Math.min(chunkBytes, up.chunk_max_bytes || chunkBytes);
  const start = performance.now();
  let off = up.offset;
  let failures = 0;
  while (off < file.size) {
    if (cancelled()) {
      await api('DELETE', `/api/v1/uploads/${up.id}`).catch(() => undefined);
      throw new Error('Upload cancelled.');
    }
    try {
      up = await api<UploadView>('PATCH', `/api/v1/uploads/${up.id}?offset=${off}`, file.slice(off, Math.min(off + chunk, file.size)));
      off = up.offset;
      failures = 0;
      progress({ done: off, total: file.size, rate: off / Math.max((performance.now() - start) / 1000, 0.001) });
    } catch (err) {
      const code = err instanceof ApiError ? err.code : '';
      const retry = !(err instanceof ApiError) || err.status === 0 || ['offset_mismatch', 'upload_busy', 'chunk_cut'].includes(code) || [408, 502, 503, 504].includes(err.status);
      if (!retry || ++failures > maxFailures) throw err;
      const wait = Math.min(500 * 2 ** (failures - 1), 15000);
      progress({ done: off, total: file.size, rate: 0, note: `connection lost; retrying in ${(wait / 1000).toFixed(1)} s` });
      await new Promise((r) => setTimeout(r, wait));
      try { off = (await api<UploadView>('GET', `/api/v1/uploads/${up.id}`)).offset; } catch { /* the next chunk tries again */ }
    }
  }
  return api<Dataset>('POST', `/api/v1/uploads/${up.id}/finish`);
}

function Upload({ onDone }: { onDone: () => void }) {
  const notice = useNotice();
  const file = useRef<HTMLInputElement>(null);
  const cancel = useRef(false);
  const [f, setF] = useState({ name: '', tags: '', description: '', visibility: 'private' });
  const [busy, setBusy] = useState(false);
  const [prog, setProg] = useState<Progress | null>(null);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const chosen = file.current?.files?.[0];
    if (!chosen) return;
    const name = f.name.trim() || chosen.name.replace(/\.[^.]*$/, '');
    const meta = { name, tags: f.tags.split(',').map((t) => t.trim()).filter(Boolean), description: f.description, visibility: f.visibility };
    setBusy(true);
    cancel.current = false;
    setProg({ done: 0, total: chosen.size, rate: 0 });
    try {
      const d = await sendFile(chosen, meta, setProg, () => cancel.current);
      notice.ok(`Uploaded ${d.name}: ${d.rows} rows, ${d.columns.length} columns.`);
      setF({ name: '', tags: '', description: '', visibility: f.visibility });
      if (file.current) file.current.value = '';
      onDone();
    } catch (err) { notice.error(err); } finally { setBusy(false); setProg(null); }
  };
  const pct = prog ? (100 * prog.done) / Math.max(prog.total, 1) : 0;
  return (
    <form className="card form-grid" onSubmit={submit} aria-label="Upload a dataset">
      <h2>Upload a dataset</h2>
      <label className="wide">CSV or Parquet file of any size (header row, numbers or categories)<input ref={file} name="file" type="file" accept=".csv,text/csv,.parquet,.pq" required /></label>
      <label>Name (default: the file name)<input name="name" value={f.name} onChange={(e) => setF({ ...f, name: e.target.value })} /></label>
      <label>Tags (comma-separated)<input name="tags" value={f.tags} onChange={(e) => setF({ ...f, tags: e.target.value })} placeholder="medical, diabetes" /></label>
      <label>Visibility<select name="visibility" value={f.visibility} onChange={(e) => setF({ ...f, visibility: e.target.value })}>
        <option value="private">private (differentially private previews and training)</option><option value="public">public</option></select></label>
      <label className="wide">Description<textarea name="description" rows={2} value={f.description} onChange={(e) => setF({ ...f, description: e.target.value })} /></label>
      {prog && (
        <div className="wide upload-progress">
          <progress max={prog.total} value={prog.done} aria-label="Upload progress">{pct.toFixed(0)}%</progress>
          <span className="small" role="status">{fmtBytes(prog.done)} of {fmtBytes(prog.total)} ({pct.toFixed(1)}%){prog.rate > 0 && `, ${fmtBytes(prog.rate)}/s`}{prog.note && ` — ${prog.note}`}</span>
        </div>
      )}
      <div className="wide">
        <button type="submit" className="primary" disabled={busy}>Upload</button>
        {busy && <button type="button" onClick={() => { cancel.current = true; }}>Cancel upload</button>}
      </div>
    </form>
  );
}

function DatasetRow({ d, open, toggle, canWrite, onChange }: { d: Dataset; open: boolean; toggle: () => void; canWrite: boolean; onChange: () => void }) {
  const ix = d.indexing;
  return (
    <>
      <tr data-dataset={d.name}>
        <td><button type="button" className="link" aria-expanded={open} onClick={toggle}>{d.name}</button><div className="muted small"><code>{d.id}</code></div></td>
        <td>{(d.tags ?? []).map((t) => <span key={t} className="tag">{t}</span>)}</td>
        <td>{d.visibility}</td>
        <td>{d.rows} × {d.columns.length}</td>
        <td><span className={`badge ix-${ix?.state ?? 'unknown'}`} title={ix?.error || (ix?.at ? `since ${fmtTime(ix.at)}` : '')}>{ix?.state ?? 'unknown'}</span>{ix?.error && <div className="small error-text">{ix.error}</div>}</td>
        <td>{fmtTime(d.created_at)}</td>
        <td className="actions">{canWrite && <ActionButton className="danger" run={async () => { if (!confirm(`Delete dataset ${d.name}?`)) throw new Error('Cancelled.'); await api('DELETE', `/api/v1/datasets/${d.id}`); onChange(); }} ok={`Deleted ${d.name}.`}>Delete</ActionButton>}</td>
      </tr>
      {open && (
        <tr className="detail"><td colSpan={7}>
          {d.description && <p>{d.description}</p>}
          <h3>Schema</h3>
          <div className="table-wrap" tabIndex={0}><table className="compact"><thead><tr><th>#</th><th>Column</th><th>Type</th></tr></thead>
            <tbody>{d.columns.map((c, i) => <tr key={c.name}><td>{i + 1}</td><td><code>{c.name}</code></td><td>{c.type}</td></tr>)}</tbody></table></div>
          <h3>Synthetic preview</h3>
          <SyntheticPreview d={d} />
          {canWrite && <DatasetEdit d={d} onChange={onChange} />}
        </td></tr>
      )}
    </>
  );
}

type Preview = { synthetic: boolean; dp: boolean; epsilon?: number; delta?: number; columns: string[]; rows: string[][] };

/** Rows drawn from per-column marginals (noised for private data): the same preview data scientists see, never real rows. */
function SyntheticPreview({ d }: { d: Dataset }) {
  const p = useLoad(() => api<Preview>('GET', `/api/v1/datasets/${d.id}/preview?rows=5`), [d.id]);
  if (p.error) return <LoadError error={p.error} />;
  if (!p.data) return <p className="muted">Drawing synthetic rows…</p>;
  const pv = p.data;
  return (
    <>
      <p className="muted small">Synthetic rows: each cell drawn on its own from that column's {pv.dp ? `differentially private marginal (ε ${pv.epsilon}, δ ${pv.delta}, spent once per dataset version)` : 'marginal'}; no row is a real row.</p>
      <div className="table-wrap" tabIndex={0}><table className="compact" aria-label={`Synthetic preview of ${d.name}`}><thead><tr>{pv.columns.map((c) => <th key={c}>{c}</th>)}</tr></thead>
        <tbody>{pv.rows.map((r, i) => <tr key={i}>{r.map((v, j) => <td key={j}>{v}</td>)}</tr>)}</tbody></table></div>
    </>
  );
}
