import { useEffect, useState, type FormEvent } from 'react';
import { api, type Settings } from '../api';
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
    </Page>
  );
}
