// The admin app's end-to-end flow in a real browser (Debian's Chromium driven
// by playwright-core) against real fedgrid processes: a network peer, a
// gateway, a node and a data scientist using the CLI.
//
//   setup (first Owner) -> upload a private CSV -> issue a join token, start
//   a node with it -> create a compliance officer and a data scientist ->
//   the data scientist trains with `fedgrid train --wait` -> the officer
//   approves the release in the Review queue -> `fedgrid result` gets the model.
//
// Run by ui/browser_test.go (make test). Environment: FEDGRID_BIN (the
// binary), CHROMIUM (the browser), OUT_DIR (screenshots), WORK_DIR (data),
// REPO (the repository root, for examples/).
import { spawn, execFile } from 'node:child_process';
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

// axe-core (npm), injected into the page, checks every screen for WCAG A/AA
// violations; serious and critical ones fail the flow.
const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js');

const BIN = must('FEDGRID_BIN');
const CHROMIUM = must('CHROMIUM');
const OUT = must('OUT_DIR');
const WORK = must('WORK_DIR');
const REPO = must('REPO');
const NETWORK = `ui-e2e-${process.pid}`;
// HTTPS: the gateway serves TLS_CERT/TLS_KEY; Chromium trusts that key only
// (TLS_SPKI), Node's fetch that certificate (NODE_EXTRA_CA_CERTS).
const TLS_CERT = process.env.TLS_CERT;
const TLS_KEY = process.env.TLS_KEY;
const TLS_SPKI = process.env.TLS_SPKI;
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

function must(k) {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
}
const t0 = Date.now();
const log = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
mkdirSync(OUT, { recursive: true });

// ---- processes

const procs = [];
function startPeer(name, args) {
  return new Promise((resolve, reject) => {
    const p = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    procs.push(p);
    let buf = '';
    const logFile = join(WORK, `${name}.log`);
    const timer = setTimeout(() => reject(new Error(`${name}: no ready line in 30 s; see ${logFile}`)), 30000);
    const onData = (d) => {
      buf += d;
      writeFileSync(logFile, buf);
      const m = buf.match(/^ready peer=(\S+) addrs=(\S+)(?: http=(\S+))?/m);
      if (m) {
        clearTimeout(timer);
        const setup = buf.match(/^setup-token (\S+)/m);
        resolve({ proc: p, peer: m[1], addrs: m[2].split(','), http: m[3], setupToken: setup?.[1] });
      }
    };
    p.stdout.on('data', onData);
    p.stderr.on('data', onData);
    p.on('exit', (code) => { clearTimeout(timer); reject(new Error(`${name} exited ${code} before ready:\n${buf}`)); });
  });
}

function cli(args, timeoutMs = 90000) {
  return new Promise((resolve, reject) => {
    execFile(BIN, args, { timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`fedgrid ${args.join(' ')}: ${err.message}\n${stderr}`));
      else resolve({ stdout, stderr });
    });
  });
}

async function stopAll() {
  for (const p of procs.reverse()) {
    if (p.exitCode === null) {
      p.removeAllListeners('exit');
      p.kill('SIGTERM');
      await new Promise((r) => { const t = setTimeout(() => { p.kill('SIGKILL'); r(); }, 5000); p.on('exit', () => { clearTimeout(t); r(); }); });
    }
  }
}

// ---- browser helpers

let page;
const axeFindings = [];
const sideways = [];
// axeCheck runs axe-core on the page as it is and keeps its serious and
// critical violations (reported together at the end).
async function axeCheck(name) {
  if (!(await page.evaluate(() => Boolean(window.axe)))) await page.addScriptTag({ path: AXE });
  const found = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'], runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] } });
    return r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => ({
      id: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.slice(0, 3).map((n) => `${n.target.join(' ')}: ${(n.failureSummary || '').split('\n').slice(1, 2).join(' ').trim()}`),
    }));
  });
  if (found.length) axeFindings.push({ page: name, violations: found });
}
// noSidewaysScroll: the page is not wider than the viewport.
async function noSidewaysScroll(name) {
  const w = await page.evaluate(() => {
    const vw = window.innerWidth;
    // The outermost elements that stick out, to say what to fix.
    const out = [...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > vw + 1 && !(e.parentElement && e.parentElement.getBoundingClientRect().right > vw + 1))
      .slice(0, 4).map((e) => {
        const chain = [];
        for (let a = e; a && a !== document.body; a = a.parentElement) {
          const cs = getComputedStyle(a);
          chain.push(`${a.tagName.toLowerCase()}${a.className && typeof a.className === 'string' ? '.' + a.className.split(' ').join('.') : ''}[w=${Math.round(a.getBoundingClientRect().width)} ov=${cs.overflowX} d=${cs.display}]`);
        }
        return chain.join(' < ');
      });
    return { sw: document.documentElement.scrollWidth, vw, out };
  });
  if (w.sw > w.vw) sideways.push(`${name}: ${w.sw} px wide in a ${w.vw} px viewport: ${w.out.join(', ')}`);
}
async function shot(name, fullPage = false) {
  await page.waitForTimeout(150);
  await axeCheck(name);
  await page.screenshot({ path: join(OUT, `${name}.png`), fullPage });
  log('screenshot', name);
}
async function okNotice(re) {
  const n = page.getByTestId('notice-ok').filter({ hasText: re });
  await n.first().waitFor({ timeout: 15000 }).catch(async (e) => {
    const errs = await page.getByTestId('notice-error').allTextContents();
    throw new Error(`no success notice ${re}; errors shown: ${JSON.stringify(errs)}; ${e.message}`);
  });
}
async function goto(route) {
  await page.evaluate((r) => { window.location.hash = `#/${r}`; }, route);
  await page.locator('main h1').first().waitFor();
}
async function login(email, password) {
  await page.getByRole('heading', { name: 'Log in', exact: true }).waitFor();
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await okNotice(/Logged in as/);
}

async function main() {
  // Peers: a network (bootstrap), the gateway under test.
  const net = await startPeer('network', ['network', '--data', join(WORK, 'network'), '--network', NETWORK, '--listen', '/ip4/127.0.0.1/tcp/0']);
  const gw = await startPeer('gateway', ['gateway', '--data', join(WORK, 'gateway'), '--network', NETWORK, '--listen', '/ip4/127.0.0.1/tcp/0',
    '--bootstrap', net.addrs[0], '--http', '127.0.0.1:0', '--name', 'Hospital A',
    ...(TLS_CERT ? ['--tls-cert', TLS_CERT, '--tls-key', TLS_KEY] : [])]);
  log('gateway', gw.http, gw.peer);
  if (TLS_CERT) {
    if (!gw.http.startsWith('https://')) throw new Error(`the gateway serves ${gw.http}, not HTTPS`);
    const root = await fetch(`${gw.http}/`, { redirect: 'manual' });
    if (root.status < 300 || root.status > 399 || root.headers.get('location') !== '/admin/') throw new Error(`GET / gave ${root.status} ${root.headers.get('location')}, not a redirect to /admin/`);
    if (!/max-age=/.test(root.headers.get('strict-transport-security') || '')) throw new Error('no Strict-Transport-Security header over HTTPS');
  }
  const openapi = await (await fetch(`${gw.http}/api/v1/openapi.json`)).json();
  if (!openapi.paths?.['/api/v1/requests/{id}/approve']) throw new Error('the gateway has no POST /api/v1/requests/{id}/approve');

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ...(TLS_SPKI ? [`--ignore-certificate-errors-spki-list=${TLS_SPKI}`] : [])],
  });
  try {
    // bypassCSP lets the test inject axe-core; the app itself runs under the gateway's CSP.
    const ctx = await browser.newContext({ viewport: DESKTOP, bypassCSP: true });
    page = await ctx.newPage();
    const consoleErrors = [];
    page.on('console', (m) => { if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) consoleErrors.push(m.text()); });
    page.on('pageerror', (e) => consoleErrors.push(String(e)));

    // 1. A fresh gateway opens on Setup (with the app's favicon).
    const adminResp = await page.goto(`${gw.http}/admin/`);
    if (TLS_CERT) {
      const sec = await adminResp.securityDetails();
      if (!sec) throw new Error('the admin app was not loaded over TLS');
      log('admin app over', sec.protocol, 'certificate', sec.subjectName);
    }
    await page.getByRole('heading', { name: 'Set up this gateway', exact: true }).waitFor();
    const icon = await page.evaluate(() => document.querySelector('link[rel=icon]')?.href);
    if (!icon || (await page.evaluate(async (u) => (await fetch(u)).status, icon)) !== 200) throw new Error(`favicon ${icon} does not load`);
    await shot('01-setup-1280');
    if (!gw.setupToken) throw new Error('the fresh gateway printed no setup-token line');
    await page.getByLabel('Setup token').fill(gw.setupToken);
    await page.getByLabel('Your name').fill('Olivia Owner');
    await page.getByLabel('Email').fill('owner@hospital-a.example');
    await page.getByLabel('Password', { exact: true }).fill('owner password 1');
    await page.getByLabel('Repeat the password').fill('owner password 1');
    await page.getByRole('button', { name: 'Create the Owner' }).click();
    await okNotice(/Owner owner@hospital-a.example created/);
    await page.getByRole('heading', { name: 'Dashboard', exact: true }).waitFor();
    log('setup done');

    // Keyboard: the skip link is the first stop in tab order; a nav link opens with Enter.
    const first = await page.evaluate(() => document.querySelector('a[href], button, input, select, textarea, [tabindex]:not([tabindex="-1"])')?.textContent);
    if (first !== 'Skip to content') throw new Error(`the first focusable element is ${JSON.stringify(first)}, not the skip link`);
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Datasets' }).focus();
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Datasets', exact: true }).waitFor();

    // 2. Upload a private CSV.
    await page.locator('input[name=file]').setInputFiles(join(REPO, 'examples/data/pima_diabetes.csv'));
    await page.getByLabel('Name (default: the file name)').fill('pima-diabetes');
    await page.getByLabel('Tags (comma-separated)').fill('medical, diabetes');
    await page.getByLabel('Visibility').selectOption('private');
    await page.getByRole('button', { name: 'Upload' }).click();
    await okNotice(/Uploaded pima-diabetes: \d+ rows, 9 columns/);
    const dsRow = page.locator('tr[data-dataset="pima-diabetes"]');
    await dsRow.waitFor();
    const dsID = (await dsRow.locator('code').first().textContent()).trim();
    await dsRow.getByRole('button', { name: 'pima-diabetes' }).click();
    await page.getByRole('heading', { name: 'Schema', exact: true }).waitFor();
    // The synthetic preview (GET /api/v1/datasets/{id}/preview): five drawn rows, the upload's columns.
    const preview = page.getByRole('table', { name: 'Synthetic preview of pima-diabetes' });
    await preview.waitFor();
    const previewRows = await preview.locator('tbody tr').count();
    if (previewRows !== 5) throw new Error(`synthetic preview shows ${previewRows} rows, want 5`);
    if (!(await preview.locator('thead').innerText()).includes('glucose')) throw new Error('synthetic preview lacks the upload\'s columns');
    // The DHT indexing state settles to provided (the network peer is up).
    await dsRow.locator('.badge.ix-provided').waitFor({ timeout: 30000 }).catch(() => log('indexing not yet provided; continuing'));
    await shot('02-datasets-1280');
    log('dataset', dsID);

    // A failure shows the API's own message.
    await goto('users');
    const form = page.getByRole('form', { name: 'Create a user' });
    await form.getByLabel('Email').fill('bad@hospital-a.example');
    await form.getByLabel('Password').fill('password 12345');
    await form.getByLabel(/Peer ID/).fill('not-a-peer-id');
    await form.getByRole('button', { name: 'Create user' }).click();
    await page.getByTestId('notice-error').filter({ hasText: 'peer_id: not a libp2p peer ID' }).waitFor();

    // 3. Users: a compliance officer and a data scientist (peer ID from fedgrid keygen, budget).
    const key = join(WORK, 'scientist.key');
    const sciPeer = (await cli(['keygen', '--out', key])).stdout.trim();
    const createUser = async (email, role, budget, peer) => {
      await form.getByLabel('Email').fill(email);
      await form.getByLabel('Name').fill(role);
      await form.getByLabel('Password').fill('user password 1');
      await form.getByLabel('Role').selectOption(role);
      await form.getByLabel('Budget ε').fill(budget);
      await form.getByLabel(/Peer ID/).fill(peer);
      await form.getByRole('button', { name: 'Create user' }).click();
      await okNotice(new RegExp(`Created ${email.replace(/\./g, '\\.')} as ${role}`));
    };
    await createUser('officer@hospital-a.example', 'Compliance Officer', '', '');
    await createUser('scientist@lab.example', 'Data Scientist', '20', sciPeer);
    await page.locator('tr[data-user="scientist@lab.example"]').waitFor();
    await shot('03-users-1280');

    // Dataset edit: description, a per-user override and an epsilon cap.
    await goto('datasets');
    await page.locator('tr[data-dataset="pima-diabetes"]').getByRole('button', { name: 'pima-diabetes' }).click();
    const edit = page.getByRole('form', { name: 'Edit pima-diabetes' });
    await edit.getByLabel('Description').fill('Pima Indians diabetes study, 768 women');
    await edit.getByRole('button', { name: 'Save dataset' }).click();
    await okNotice(/Saved pima-diabetes/);
    const ovf = page.getByRole('form', { name: 'Set an override' });
    await ovf.getByLabel('User').selectOption({ label: 'scientist@lab.example' });
    await ovf.getByLabel('May train').selectOption('yes');
    await ovf.getByRole('button', { name: 'Set override' }).click();
    await okNotice(/Override saved/);
    await page.getByRole('table', { name: 'Overrides on pima-diabetes' }).locator('td', { hasText: 'scientist@lab.example' }).waitFor();
    const capf = page.getByRole('form', { name: 'Set a cap' });
    await capf.getByLabel('User').selectOption({ label: 'scientist@lab.example' });
    await capf.getByLabel('Cap ε (empty: no cap)').fill('15');
    await capf.getByRole('button', { name: 'Set cap' }).click();
    await okNotice(/Cap saved/);
    await shot('02b-dataset-edit-1280', true);

    // Roles: the permission matrix.
    await goto('roles');
    await page.getByRole('checkbox', { name: 'Compliance Officer: upload data' }).waitFor();
    await shot('04-roles-1280');

    // 4. Nodes: issue a join token and enrol a node with it.
    await goto('nodes');
    await page.getByRole('button', { name: 'Issue join token' }).click();
    await okNotice(/Join token issued/);
    const token = (await page.getByTestId('join-token').textContent()).trim();
    const nodePeer = await startPeer('node', ['node', '--data', join(WORK, 'node'), '--network', NETWORK, '--listen', '/ip4/127.0.0.1/tcp/0',
      '--bootstrap', net.addrs[0], '--gateway', gw.addrs[0], '--join-token', token, '--slots', '1']);
    await page.locator('tr[data-node]').first().waitFor({ timeout: 20000 });
    await page.locator('tr[data-node] .badge', { hasText: 'healthy' }).first().waitFor({ timeout: 20000 });
    await shot('05-nodes-1280');
    log('node enrolled');

    // Settings: white label.
    await goto('settings');
    await page.getByLabel('Name', { exact: true }).fill('Hospital A data office');
    await page.getByLabel('Colour').fill('#0f766e');
    await page.getByRole('button', { name: 'Save settings' }).click();
    await okNotice(/Settings saved/);
    await page.locator('nav .brand', { hasText: 'Hospital A data office' }).waitFor();
    // The allowed source hosts (the Owner's list): saved in canonical form.
    await page.locator('textarea[name=allowed_hosts]').fill('DB.clinic.example:5432\n10.20.0.9/16');
    await page.getByRole('button', { name: 'Save source hosts' }).click();
    await okNotice(/Source hosts saved/);
    const hosts = await page.locator('textarea[name=allowed_hosts]').inputValue();
    if (hosts !== 'db.clinic.example:5432\n10.20.0.0/16') throw new Error(`source hosts after saving: ${JSON.stringify(hosts)}`);
    await shot('06-settings-1280');

    // 5. The data scientist trains with the CLI (DP-SGD plan, private data).
    const plan = JSON.parse(readFileSync(join(REPO, 'examples/plans/logreg_pima.json'), 'utf8'));
    plan.train.epochs = 5;
    plan.train.validation_fraction = 0; // required with dp_sgd on private data
    plan.privacy = { dp_sgd: { noise_multiplier: 1.1, max_grad_norm: 1.0 }, delta: 1e-5 };
    // With DP-SGD the standardisation statistics are declared, not fitted on
    // the private rows: a data scientist would take them from published
    // figures; here they come from the example file.
    {
      const [head, ...rows] = readFileSync(join(REPO, 'examples/data/pima_diabetes.csv'), 'utf8').trim().split('\n').map((l) => l.split(',').map((c) => c.replace(/"/g, '')));
      const mean = [], std = [];
      for (const f of plan.features) {
        const i = head.indexOf(f);
        if (i < 0) throw new Error(`column ${f} not in the CSV header`);
        const xs = rows.map((r) => Number(r[i]));
        const m = xs.reduce((a, b) => a + b, 0) / xs.length;
        mean.push(m);
        std.push(Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / xs.length) || 1);
      }
      plan.preprocess = [{ op: 'standardize', mean, std }];
    }
    const planFile = join(WORK, 'plan.json');
    writeFileSync(planFile, JSON.stringify(plan));
    const sciArgs = ['--network', NETWORK, '--bootstrap', net.addrs[0], '--key', key];
    const train = await cli(['train', ...sciArgs, '--dataset', `${gw.peer}/${dsID}`, '--plan', planFile, '--wait', '--json'], 90000);
    const job = JSON.parse(train.stdout);
    log('train finished:', job.state, job.ref ?? job.id, job.release ?? '');
    const jobRef = job.ref ?? `${gw.peer}/${job.id}`;

    // Log out; the officer logs in.
    await page.getByRole('button', { name: 'Log out' }).click();
    await login('officer@hospital-a.example', 'user password 1');
    // The Review queue link shows the pending release.
    await page.getByTestId('pending-badge').filter({ hasText: /^[12]$/ }).waitFor({ timeout: 60000 });
    // A second job, to cancel from the Jobs page (the first one's training is
    // over: its release waits for review): the node is stopped first,
    // so that it stays queued.
    await new Promise((r) => { nodePeer.proc.removeAllListeners('exit'); nodePeer.proc.once('exit', r); nodePeer.proc.kill('SIGTERM'); });
    // Without DP-SGD, so that it reserves no epsilon (its result would need review all the same).
    const long = { ...plan, train: { ...plan.train, epochs: 5000 } };
    delete long.privacy;
    const longFile = join(WORK, 'long.json');
    writeFileSync(longFile, JSON.stringify(long));
    const longJob = JSON.parse((await cli(['train', ...sciArgs, '--dataset', `${gw.peer}/${dsID}`, '--plan', longFile, '--json'], 60000)).stdout);

    // Jobs: both jobs, a filter, a job's detail, and cancelling the long one.
    await goto('jobs');
    await page.locator(`tr[data-job="${job.id}"]`).waitFor({ timeout: 15000 });
    await page.locator(`tr[data-job="${longJob.id}"]`).waitFor();
    // The list is paginated by the API (?limit=, next_cursor): two jobs fit on page 1.
    const pager = page.getByRole('navigation', { name: 'Pages of jobs' });
    await pager.getByText('Page 1').waitFor();
    if (await pager.getByRole('button', { name: 'Next page' }).isEnabled()) throw new Error('Next page enabled with two jobs');
    await page.getByLabel('State').selectOption('succeeded');
    await page.locator(`tr[data-job="${longJob.id}"]`).waitFor({ state: 'detached' });
    await page.getByLabel('State').selectOption('');
    await page.locator(`tr[data-job="${job.id}"]`).getByRole('button', { name: job.id }).click();
    await page.getByRole('heading', { name: `Job ${job.id}` }).waitFor();
    await shot('13-jobs-1280', true);
    await page.getByRole('button', { name: `Cancel job ${longJob.id}` }).click();
    await okNotice(new RegExp(`Job ${longJob.id} cancelled`));
    await page.locator(`tr[data-job="${longJob.id}"] .badge.s-cancelled`).waitFor();
    // A notice stays on its page: going elsewhere clears it.
    await page.waitForTimeout(1600);
    await goto('models');
    if (await page.getByTestId('notice-ok').count()) throw new Error('the cancel notice followed to the Models page');
    await shot('14-models-1280');
    // An unknown page says so.
    await goto('no-such-page');
    await page.getByRole('heading', { name: 'Page not found', exact: true }).waitFor();
    await shot('15-not-found-1280');
    await goto('dashboard');
    await page.locator('.stat', { hasText: 'succeeded' }).locator('.stat-val', { hasText: '1' }).waitFor({ timeout: 15000 });
    await shot('07-dashboard-officer-1280');

    // Before the approval the data scientist cannot have the result.
    const withheld = await cli(['result', ...sciArgs, jobRef, '--out', join(WORK, 'early.json')], 60000).then(() => null, (e) => e.message);
    if (!withheld || !/review/.test(withheld)) throw new Error(`fedgrid result before approval: ${withheld ?? 'succeeded'}, want a refusal pending review`);

    // 6. The officer approves the release in the Review queue.
    await goto('review');
    const req = page.locator(`li[data-request]`, { hasText: 'Release the result of job' }).first();
    await req.waitFor({ timeout: 20000 });
    if (!(await req.locator('.request-body').count())) await req.locator('.request-head').click();
    await req.getByRole('heading', { name: /^Plan/ }).waitFor();
    await req.locator('table.plan').waitFor();
    await shot('08-review-1280', true);
    await req.getByRole('button', { name: 'Approve' }).click();
    await okNotice(/Approved release request/);
    await page.getByLabel('Show').selectOption('approved');
    await page.locator('li[data-request] .badge.r-approved').first().waitFor();
    await shot('09-review-approved-1280');
    log('approved in the UI');

    // 7. The data scientist gets the result.
    const modelFile = join(WORK, 'model.json');
    await cli(['result', ...sciArgs, jobRef, '--out', modelFile], 60000);
    const model = JSON.parse(readFileSync(modelFile, 'utf8'));
    if (model.format !== 'fedgrid.model/v1') throw new Error(`result is not a fedgrid.model/v1: ${model.format}`);
    log('result fetched: epsilon', model.privacy?.epsilon);

    // Audit log: the chain verifies.
    await page.getByRole('button', { name: 'Log out' }).click();
    await login('owner@hospital-a.example', 'owner password 1');
    await goto('audit');
    await page.getByTestId('audit-verify').filter({ hasText: 'The hash chain verifies' }).waitFor();
    await page.getByLabel("Action (or prefix ending in '.')").fill('user.');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.locator('table.audit code', { hasText: 'user.create' }).first().waitFor();
    await shot('10-audit-1280');
    // Approval rules (owner: can_edit_settings), on the Review page.
    await goto('review');
    const rf = page.getByRole('form', { name: 'Create an approval rule' });
    await rf.getByLabel('Dataset tags (all required)').fill('medical, diabetes');
    await rf.getByLabel('Requester roles (empty: any)').fill('Data Scientist');
    await rf.getByLabel('Max ε per release').fill('3');
    await rf.getByRole('button', { name: 'Create rule' }).click();
    await okNotice(/Approval rule created/);
    await page.locator('section[aria-labelledby=rules-h] td', { hasText: '0 / 10' }).waitFor();
    await shot('12-rules-1280', true);
    await goto('dashboard');
    await page.locator('.hbar', { hasText: 'scientist@lab.example' }).waitFor().catch(() => log('no epsilon bar yet'));
    await shot('11-dashboard-owner-1280');

    // Phone width (390 px): every page, none wider than the screen.
    await page.setViewportSize(PHONE);
    for (const r of ['dashboard', 'review', 'users', 'roles', 'datasets', 'jobs', 'models', 'nodes', 'audit', 'settings', 'no-such-page']) {
      await goto(r);
      await page.waitForTimeout(300);
      await noSidewaysScroll(`${r} at 390 px`);
      await shot(`20-${r}-phone`);
    }
    await page.getByRole('button', { name: 'Menu' }).click();
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Nodes' }).click();
    await page.getByRole('heading', { name: 'Nodes', exact: true }).waitFor();
    await page.getByRole('button', { name: 'Menu' }).click();
    await shot('21-menu-phone');

    if (consoleErrors.length) throw new Error(`browser console errors: ${consoleErrors.join('\n')}`);
    const problems = [];
    if (sideways.length) problems.push(`pages that scroll sideways:\n${sideways.join('\n')}`);
    if (axeFindings.length) problems.push(`axe-core: serious or critical violations:\n${JSON.stringify(axeFindings, null, 1)}`);
    if (problems.length) throw new Error(problems.join('\n'));
    log('axe-core: no serious or critical violation on any screen; no page wider than 390 px');
    await ctx.close();
  } catch (e) {
    if (page) await page.screenshot({ path: join(OUT, 'failure.png') }).catch(() => {});
    throw e;
  } finally {
    await browser.close();
  }
  log('PASS: full flow');
}

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, async () => { console.error(`FAIL: ${sig} (timeout?)`); await stopAll(); process.exit(1); });
}

main().then(
  async () => { await stopAll(); process.exit(0); },
  async (e) => { console.error('FAIL:', e.stack || e); await stopAll(); process.exit(1); },
);
