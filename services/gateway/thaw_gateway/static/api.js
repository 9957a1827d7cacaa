// The public HTTP API, called with the token typed at sign-in (kept in this
// tab's sessionStorage, never anywhere else).

const KEY = "thaw.token";

export const token = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const enc = encodeURIComponent;

async function request(path, { bearer = token.get(), signal } = {}) {
  const r = await fetch(path, { headers: { Authorization: `Bearer ${bearer}` }, signal });
  if (r.ok) return r;
  let code = `http_${r.status}`;
  let message = r.statusText || code;
  try {
    const body = await r.json();
    code = body.error.code;
    message = body.error.message;
  } catch {
    // Not an ErrorBody (a proxy's page): the status says enough.
  }
  throw new ApiError(r.status, code, message);
}

export async function api(path, options) {
  return (await request(path, options)).json();
}

// An NDJSON route (logs with follow=1): onLine gets each parsed line as it
// arrives, until the server ends the stream or `signal` aborts it.
export async function streamLines(path, onLine, signal) {
  const r = await request(path, { signal });
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 1);
      if (line) onLine(JSON.parse(line));
    }
  }
}
