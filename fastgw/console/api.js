// The admin API, the only thing the console talks to. The admin key lives in this tab's
// sessionStorage and goes out only as the X-API-KEY header: never in a URL or a cookie.

const STORE = "fastgw.adminKey";

export class ApiError extends Error {
  constructor(status, message, path) {
    super(message);
    this.status = status;
    this.path = path ?? null;
  }
}

// A body written as JSON text already, sent as it is: through JSON.parse and back,
// 9007199254740993 would go out as 9007199254740992 and 1.0 as 1.
export class JsonText {
  constructor(text) {
    this.text = text;
  }
}

export const adminKey = {
  get: () => sessionStorage.getItem(STORE),
  set: (key) => sessionStorage.setItem(STORE, key),
  forget: () => sessionStorage.removeItem(STORE),
};

let onUnauthorised = () => {};
export function whenUnauthorised(callback) {
  onUnauthorised = callback;
}

// A path from segments, each percent-encoded: ["services", name] -> /admin/services/<name>
export function adminPath(...segments) {
  return `/admin/${segments.map(encodeURIComponent).join("/")}`;
}

export async function call(method, segments, body, key = adminKey.get(), extra = {}) {
  const headers = { "X-API-KEY": key ?? "", ...extra };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(adminPath(...segments), {
      method, headers,
      body: body === undefined ? undefined : body instanceof JsonText ? body.text : JSON.stringify(body),
      cache: "no-store", credentials: "omit", redirect: "error", referrerPolicy: "no-referrer",
    });
  } catch (error) {
    throw new ApiError(0, `the admin API did not answer (${error.message})`);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data?.error_msg ?? `HTTP ${response.status}`, data?.path);
    if (response.status === 401 && key === adminKey.get()) onUnauthorised(error);
    throw error;
  }
  return data;
}

export const api = {
  get: (...segments) => call("GET", segments),
  put: (segments, body) => call("PUT", segments, body),
  // a PUT that only creates: 412 (at the name's field) if the object exists already
  create: (segments, body) => call("PUT", segments, body, adminKey.get(), { "If-None-Match": "*" }),
  post: (segments, body) => call("POST", segments, body),
  remove: (...segments) => call("DELETE", segments),
};
