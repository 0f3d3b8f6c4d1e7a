import { useEffect, useState, type FormEvent } from 'react';
import { api, type Settings, type SourceSettings } from '../api';
import { useSession } from '../App';
import { Page, useNotice } from '../ui';

export function SettingsPage() {
  const { settings, reloadSettings, can } = useSession();
  const notice = useNotice();
  const [f, setF] = useState<Settings>({ name: '', logo_url: '', color: '#2f5fd0' });
  useEffect(() => { if (settings) setF({ name: settings.name, logo_url: settings.logo_url, color: settings.color || '#2f5fd0' }); }, [settings]);
  const editable = can('can_edit_settings');
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    try {
      await api('PUT', '/api/v1/settings', f);
      notice.ok('Settings saved.');
      reloadSettings();
    } catch (err) { notice.error(err); }
  };
  const onLogo = (file?: File) => {
    if (!file) return;
    if (file.size > 40_000) { notice.error(new Error(`The logo is ${file.size} bytes; use an image under 40 kB, or a URL.`)); return; }
    const r = new FileReader();
    r.onload = () => setF((x) => ({ ...x, logo_url: String(r.result) }));
    r.readAsDataURL(file);
  };
  return (
    <Page title="Settings">
      <form className="card form-grid" onSubmit={submit} aria-label="White-label settings">
        <h2>White label</h2>
        <p className="wide muted">Shown in this app's header and on the login page, for everyone using this gateway. {!editable && 'Changing them needs can_edit_settings.'}</p>
        <label>Name<input name="name" value={f.name} maxLength={100} disabled={!editable} onChange={(e) => setF({ ...f, name: e.target.value })} placeholder="Hospital A data office" /></label>
        <label>Colour<input name="color" type="color" value={f.color || '#2f5fd0'} disabled={!editable} onChange={(e) => setF({ ...f, color: e.target.value })} /></label>
        <label className="wide">Logo URL (https://… or data:image/…)<input name="logo_url" value={f.logo_url} disabled={!editable} onChange={(e) => setF({ ...f, logo_url: e.target.value })} /></label>
        <label className="wide">…or upload a small logo image<input type="file" accept="image/*" disabled={!editable} onChange={(e) => onLogo(e.target.files?.[0])} /></label>
        <div className="wide preview-brand" aria-label="Preview"><span className="brand" style={{ background: f.color }}>{f.logo_url && <img className="logo" src={f.logo_url} alt="" />}<span>{f.name || 'fedgrid Admin'}</span></span></div>
        {editable && <div className="wide"><button type="submit" className="primary">Save settings</button></div>}
      </form>
      {can('can_upload_data') && <SourceHosts />}
    </Page>
  );
}

// SourceHosts shows (can_upload_data) and edits (can_manage_infrastructure:
// the Owner) the hosts a PostgreSQL source registered by anyone but the
// Owner may name.
function SourceHosts() {
  const { can } = useSession();
  const notice = useNotice();
  const editable = can('can_manage_infrastructure');
  const [text, setText] = useState('');
  const [loaded, setLoaded] = useState(false);
  useEffect(() => {
    api<SourceSettings>('GET', '/api/v1/settings/sources').then(
      (s) => { setText(s.allowed_hosts.join('\n')); setLoaded(true); },
      (err) => notice.error(err));
  }, [notice]);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const hosts = text.split(/[\s,]+/).map((h) => h.trim()).filter((h) => h !== '');
    try {
      const s = await api<SourceSettings>('PUT', '/api/v1/settings/sources', { allowed_hosts: hosts });
      setText(s.allowed_hosts.join('\n'));
      notice.ok('Source hosts saved.');
    } catch (err) { notice.error(err); }
  };
  return (
    <form className="card form-grid" onSubmit={submit} aria-label="Allowed source hosts">
      <h2>Allowed source hosts</h2>
      <p className="wide muted">
        The PostgreSQL hosts the gateway may connect to for a source registered by anyone but the Owner (the Owner's own
        sources may name any host). One a line: HOST, HOST:PORT, an IP address or a CIDR prefix such as 10.20.0.0/16.
        Empty: only the Owner may register PostgreSQL sources. {!editable && 'Changing the list needs can_manage_infrastructure.'}
      </p>
      <label className="wide">Hosts
        <textarea name="allowed_hosts" rows={4} value={text} disabled={!editable || !loaded} onChange={(e) => setText(e.target.value)} placeholder="db.clinic.example:5432" />
      </label>
      {editable && <div className="wide"><button type="submit" className="primary" disabled={!loaded}>Save source hosts</button></div>}
    </form>
  );
}
