// The API as the explorer's users call it: the same headers as any client (Bearer token and
// X-Project-ID), errors surfaced with the server's message and field.

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    const field = err.details && err.details.field ? ` (${err.details.field})` : "";
    super(`${err.message || `HTTP ${status}`}${field}`);
    this.status = status;
    this.code = err.code;
  }
}

// The page is at <prefix>/ui/ and the API at <prefix>/api/: the prefix is "" when OpsPilot
// serves itself, and the host's mount point when a host mounts it (opspilot.web_app).
export const BASE = window.location.pathname.replace(/\/ui\/.*$/, "");

export class Api {
  constructor(token, projectId, onUnauthorized) {
    this.token = token;
    this.projectId = projectId;
    this.onUnauthorized = onUnauthorized;
  }

  headers(json = false) {
    const headers = { Authorization: `Bearer ${this.token}` };
    if (this.projectId) headers["X-Project-ID"] = this.projectId;
    if (json) headers["Content-Type"] = "application/json";
    return headers;
  }

  async request(method, path, { params, body, signal } = {}) {
    const url = new URL(BASE + path, window.location.origin);
    for (const [k, v] of Object.entries(params || {})) {
      if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
    }
    const response = await fetch(url, {
      method, signal, headers: this.headers(body !== undefined),
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const doc = response.status === 204 ? null : await response.json().catch(() => null);
    if (!response.ok) {
      if (response.status === 401 && this.onUnauthorized) this.onUnauthorized();
      throw new ApiError(response.status, doc);
    }
    return doc;
  }

  get(path, params, signal) { return this.request("GET", path, { params, signal }); }

  post(path, body, signal) { return this.request("POST", path, { body: body ?? {}, signal }); }
}
