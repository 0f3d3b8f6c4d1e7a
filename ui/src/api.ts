// The gateway's HTTP admin API (CONTRACT.md, GET /api/v1/openapi.json).
// Every call goes through api(); a failure is an ApiError carrying the
// API's own error document {error: {code, message}}.

const BASE_KEY = 'fedgrid.apiBase';
const TOKEN_KEY = 'fedgrid.token';

/** The API's base URL: set on the login page, else VITE_API_URL at build time, else this origin. */
export function apiBase(): string {
  const saved = localStorage.getItem(BASE_KEY);
  if (saved) return saved;
  const built = import.meta.env.VITE_API_URL as string | undefined;
  return built ? built.replace(/\/+$/, '') : '';
}

export function setApiBase(url: string) {
  const u = url.trim().replace(/\/+$/, '');
  if (u) localStorage.setItem(BASE_KEY, u);
  else localStorage.removeItem(BASE_KEY);
}

export function apiBaseLabel(): string {
  return apiBase() || window.location.origin;
}

export function getToken(): string | null {
  const raw = localStorage.getItem(TOKEN_KEY);
  if (!raw) return null;
  try {
    const { token, expires_at } = JSON.parse(raw) as { token: string; expires_at: string };
    if (new Date(expires_at).getTime() < Date.now()) {
      localStorage.removeItem(TOKEN_KEY);
      return null;
    }
    return token;
  } catch {
    localStorage.removeItem(TOKEN_KEY);
    return null;
  }
}

export function setToken(token: string | null, expiresAt?: string) {
  if (token) localStorage.setItem(TOKEN_KEY, JSON.stringify({ token, expires_at: expiresAt }));
  else localStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(public status: number, public code: string, message: string) {
    super(message);
  }
}

type Listener = () => void;
const unauthorizedListeners = new Set<Listener>();
/** Called when a token is refused (expired, revoked): the app goes back to Login. */
export function onUnauthorized(l: Listener) {
  unauthorizedListeners.add(l);
  return () => { unauthorizedListeners.delete(l); };
}

export async function api<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  const tok = getToken();
  if (tok) headers.Authorization = `Bearer ${tok}`;
  let payload: BodyInit | undefined;
  if (body instanceof FormData) payload = body;
  else if (body instanceof Blob) {
    // One chunk of a resumable upload (PATCH /api/v1/uploads/{id}).
    headers['Content-Type'] = 'application/offset+octet-stream';
    payload = body;
  } else if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let res: Response;
  const url = apiBase() + path;
  try {
    res = await fetch(url, { method, headers, body: payload });
  } catch (e) {
    throw new ApiError(0, 'unreachable', `API unreachable at ${apiBaseLabel()} (${(e as Error).message}). Is the gateway running, and is this origin in its --cors-origin list?`);
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let doc: unknown = undefined;
  if (text) {
    try {
      doc = JSON.parse(text);
    } catch {
      throw new ApiError(res.status, 'bad_response', `${method} ${path}: HTTP ${res.status}, not JSON: ${text.slice(0, 200)}`);
    }
  }
  if (!res.ok) {
    const err = (doc as { error?: { code?: string; message?: string } } | undefined)?.error;
    if (res.status === 401 && tok) {
      setToken(null);
      unauthorizedListeners.forEach((l) => l());
    }
    throw new ApiError(res.status, err?.code ?? `http_${res.status}`, err?.message ?? `${method} ${path}: HTTP ${res.status}`);
  }
  return doc as T;
}

// ---- wire types (gateway/api/types.go, gateway/store)

export interface UploadView { id: string; size: number; offset: number; state: 'receiving' | 'complete' | 'finished'; format: 'csv' | 'parquet'; name?: string; dataset_id?: string; chunk_max_bytes: number; result?: { dataset_id: string; version: number; sha256: string } }

export interface Status { name: string; peer_id: string; addrs: string[]; setup_done: boolean }
export interface User {
  id: string; email: string; name: string; role: string; peer_id: string;
  budget_epsilon: number; reserved_epsilon: number; spent_epsilon: number; created_at: string;
  permissions?: string[];
}
export interface LoginResponse { token: string; expires_at: string; user: User }
export interface Role { name: string; permissions: string[]; default: boolean }
export interface Column { name: string; type: string }
export interface Indexing { state: string; at?: string; error?: string }
export interface Dataset {
  id: string; name: string; description: string; tags: string[] | null; visibility: string;
  columns: Column[]; rows: number; size: number; created_at: string; created_by: string; indexing?: Indexing;
}
export interface Job {
  id: string; dataset_id: string; user_id: string; requester: string; plan?: Plan; state: string;
  attempt: number; node?: string; progress: { epoch: number; epochs: number; loss: number };
  metrics?: Record<string, unknown>; error?: string; created_at: string; started_at?: string; finished_at?: string;
  parent_id?: string;
}
export interface Node { peer_id: string; slots: number; version: string; enrolled_at: string; last_seen: string }
export interface AuditEntry { seq: number; time: string; actor: string; action: string; target: string; detail?: Record<string, unknown>; prev: string; hash: string }
export interface Settings { name: string; logo_url: string; color: string }
export interface SourceSettings { schema?: number; allowed_hosts: string[] }
export interface Plan {
  format?: string; name?: string; model?: string; features?: string[]; label?: string;
  preprocess?: { op: string; [k: string]: unknown }[];
  params?: Record<string, { shape: number[]; init?: string }>;
  forward?: { op: string; in: string[]; out: string }[];
  loss?: { op: string; in: string[] };
  optimizer?: { name: string; learning_rate?: number; momentum?: number };
  train?: Record<string, unknown>;
  privacy?: { dp_sgd?: { noise_multiplier: number; max_grad_norm: number }; delta?: number };
}

/** A review-queue entry (issue 7: GET /api/v1/requests, gateway/api/compliance.go RequestView). */
export interface ReviewRequest {
  id: string;
  kind: string; // release, budget or permission
  state: string; // pending, approved, denied or withdrawn
  user_id: string;
  user_email?: string;
  user_role?: string;
  requester?: string;
  reason?: string;
  dataset?: { id: string; name: string; tags: string[] | null; visibility: string; rows: number };
  job_id?: string;
  epsilon?: number; // release: its cost; budget: the amount asked
  epsilon_micro_eps?: number;
  delta?: number;
  dp?: boolean;
  guarantee?: string;
  plan_table?: string;
  plan?: Plan;
  metrics?: Record<string, unknown>;
  error?: string; // a failed job: its outcome is this error
  auto_approvable?: boolean;
  permission?: string;
  created_at: string;
  decision?: { approved: boolean; reviewer: string; reviewer_email?: string; rule_id?: string; reason?: string; charged_epsilon?: number; at: string };
  history?: {
    requests?: Record<string, number>; releases?: Record<string, number>;
    budget_epsilon: number; reserved_epsilon: number; spent_epsilon: number; dataset_used_epsilon?: number;
  };
}

export const PERMISSIONS = [
  'can_make_data_requests',
  'can_triage_requests',
  'can_manage_privacy_budget',
  'can_create_users',
  'can_edit_roles',
  'can_manage_infrastructure',
  'can_upload_data',
  'can_edit_settings',
] as const;
