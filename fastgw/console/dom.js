// Building the page: elements, fields bound to an object's paths, dialogs.
// Text is only ever set as text (append of a string, textContent): nothing here parses HTML.

import { ApiError } from "./api.js";

let counter = 0;
export const uid = (stem = "f") => `${stem}-${++counter}`;

// h("button", {type: "button", onclick: f}, "Save"): an element; strings become text nodes.
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "value" || name === "checked") el[name] = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined && child !== false) el.append(child);
  }
  return el;
}

// A table's head row, one column header per title.
export function headRow(...titles) {
  return h("thead", {}, h("tr", {}, titles.map((t) => h("th", { scope: "col" }, t))));
}

export function clear(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
  return el;
}

// ------------------------------------------------------------------ views by address

// Each view has an address in the fragment (#consumer/oiloil, #route/svc/json): links are
// plain links, and the browser's back button and a reload keep the place. Never a key.
export const ARITY = { services: 0, consumers: 0, status: 0, service: 1, consumer: 1, route: 2 };

export function viewHash(view, ...args) {
  return `#${[view, ...args.filter((a) => a !== null && a !== undefined)].map(encodeURIComponent).join("/")}`;
}

export function parseHash(hash) {
  let parts;
  try {
    parts = hash.replace(/^#/, "").split("/").filter(Boolean).map(decodeURIComponent);
  } catch { // a malformed escape ("%E0%A4%A"): the services page, as for any unknown place
    return ["services", []];
  }
  const [view, ...args] = parts;
  if (!(view in ARITY)) return ["services", []];
  const wanted = ARITY[view];
  const given = args.slice(0, wanted);
  while (given.length < wanted) given.push(null);
  return [view, given];
}

export function viewLink(text, view, ...args) {
  return h("a", { href: viewHash(view, ...args) }, text);
}

// ------------------------------------------------------------------ paths in objects

export function getPath(obj, path) {
  let at = obj;
  for (const part of path.split(".")) {
    if (at === null || typeof at !== "object") return undefined;
    at = at[part];
  }
  return at;
}

export function setPath(obj, path, value) {
  const parts = path.split(".");
  let at = obj;
  for (const part of parts.slice(0, -1)) {
    if (at[part] === null || typeof at[part] !== "object") at[part] = {};
    at = at[part];
  }
  if (value === undefined) delete at[parts[parts.length - 1]];
  else at[parts[parts.length - 1]] = value;
}

// ------------------------------------------------------------------ value kinds

export class FieldError extends Error {
  constructor(path, message) {
    super(message);
    this.path = path;
  }
}

// How a kind of field shows a value, and reads it back. `empty` is what an emptied
// field means for an object being edited (undefined: the key is removed, so its default
// applies).
const KINDS = {
  text: {
    show: (v) => (v === null || v === undefined ? "" : String(v)),
    read: (s, spec) => (s === "" ? (spec.nullable ? null : undefined) : s),
  },
  list: {
    show: (v) => (Array.isArray(v) ? v.join(", ") : ""),
    read: (s) => s.split(/[\s,]+/).filter(Boolean),
  },
  number: {
    show: (v) => (v === null || v === undefined ? "" : String(v)),
    read: (s, spec) => {
      if (s.trim() === "") return spec.nullable ? null : undefined;
      const n = Number(s);
      if (!Number.isFinite(n)) throw new FieldError(spec.path, "must be a number");
      return n;
    },
  },
  json: {
    show: (v) => (v === null || v === undefined ? "" : JSON.stringify(v)),
    read: (s, spec) => {
      if (s.trim() === "") return spec.nullable ? null : undefined;
      try {
        return JSON.parse(s);
      } catch {
        throw new FieldError(spec.path, "must be JSON");
      }
    },
  },
};

const kindOf = (spec) => KINDS[spec.kind] ?? KINDS.text; // secret, textarea: text

// ------------------------------------------------------------------ forms

// A form over one object as it was fetched (`original`). Collecting it starts from a
// copy of that object and writes only the fields whose control changed, so every field
// the form does not show, and every field left alone, is sent back as it came.
// A new object (`isNew`) gets every field that holds a value.
export class Form {
  constructor(original, { isNew = false } = {}) {
    this.original = structuredClone(original ?? {});
    this.isNew = isNew;
    this.fields = []; // {spec, control, initial, slot}
    this.slots = new Map(); // path -> error slot, for groups that have no control
    this.general = h("p", { class: "form-error", role: "alert" });
  }

  value(path) {
    return getPath(this.original, path);
  }

  // One labelled control bound to `spec.path`:
  // {path, label, kind: text|list|number|json|checkbox|select|textarea|secret, ...}
  field(spec) {
    const id = uid("field");
    const errorId = `${id}-error`;
    const helpId = spec.help ? `${id}-help` : null;
    const kind = spec.kind ?? "text";
    let current = this.value(spec.path);
    if (current === undefined && this.isNew) current = spec.default;
    let control;
    let initial;
    const describedBy = [helpId, errorId].filter(Boolean).join(" ");
    if (kind === "checkbox") {
      control = h("input", { type: "checkbox", id, checked: Boolean(current),
                             "aria-describedby": describedBy });
      initial = control.checked;
    } else if (kind === "select") {
      control = h("select", { id, "aria-describedby": describedBy },
                  spec.options.map(([value, text]) => h("option", { value }, text)));
      control.value = current ?? spec.options[0][0];
      initial = control.value;
    } else {
      // a secret is never shown (the API sends "***"); typing one replaces it
      const shown = kind === "secret" ? "" : (spec.show ?? kindOf(spec).show)(current);
      const attrs = { id, "aria-describedby": describedBy, placeholder: spec.placeholder,
                      autocomplete: "off", spellcheck: "false" };
      control = spec.multiline || kind === "textarea"
        ? h("textarea", { ...attrs, rows: spec.rows ?? 4 })
        : h("input", { ...attrs, type: "text", inputmode: kind === "number" ? "numeric" : undefined });
      if (kind === "secret" && current === "***") {
        control.placeholder = spec.keptPlaceholder ?? "unchanged (hidden); type to replace";
      }
      control.value = shown;
      initial = shown;
    }
    if (spec.readonly) {
      if (kind === "checkbox" || kind === "select") control.disabled = true;
      else control.readOnly = true;
    }
    const slot = h("p", { class: "field-error", id: errorId });
    const entry = { spec: { ...spec, kind }, control, initial, slot };
    this.fields.push(entry);
    const label = h("label", { for: id }, spec.label);
    const help = spec.help ? h("p", { class: "help", id: helpId }, spec.help) : null;
    const extra = spec.after ? spec.after(control) : null;
    const wrap = kind === "checkbox"
      ? h("div", { class: "field checkbox" }, control, label, help, slot)
      : h("div", { class: "field" }, label,
          extra ? h("div", { class: "with-button" }, control, extra) : control, help, slot);
    entry.wrap = wrap;
    return wrap;
  }

  // A control of the page's own making: `get()` its state as a string (to tell a change),
  // `read()` its value; `element` holds it, `focus` is what an error focuses.
  custom({ path, element, focus, get, read }) {
    const slot = h("p", { class: "field-error", id: uid("field-error") });
    focus.setAttribute("aria-describedby", slot.id);
    element.append(slot);
    this.fields.push({ spec: { path, kind: "custom", read }, control: focus, get, initial: get(),
                       slot, wrap: element });
    return element;
  }

  // An error slot for a group of fields (an error naming the group itself).
  slot(path) {
    const slot = h("p", { class: "field-error", id: uid("group-error") });
    this.slots.set(path, slot);
    return slot;
  }

  changed(entry) {
    const { control, initial } = entry;
    if (entry.get) return entry.get() !== initial;
    return entry.spec.kind === "checkbox" ? control.checked !== initial : control.value !== initial;
  }

  // The object to send: the original with the changed (or, new, the filled) fields.
  collect() {
    const out = structuredClone(this.original);
    for (const entry of this.fields) {
      const { spec, control } = entry;
      if (entry.wrap.hidden) continue; // not in use (an upstream's nodes while it has a URL)
      if (!this.isNew && !this.changed(entry)) continue;
      let value;
      if (spec.kind === "custom") value = spec.read();
      else if (spec.kind === "checkbox") value = control.checked;
      else if (spec.kind === "select") value = control.value;
      else if (spec.read) value = spec.read(control.value, spec);
      else value = kindOf(spec).read(control.value, { ...spec, nullable: !this.isNew && spec.nullable });
      const empty = value === undefined || value === ""
        || (Array.isArray(value) && value.length === 0 && !spec.keepEmpty);
      if (this.isNew && empty) continue; // a new object leaves it to its default
      setPath(out, spec.path, value);
    }
    return out;
  }

  clearErrors() {
    this.general.textContent = "";
    for (const { control, slot } of this.fields) {
      slot.textContent = "";
      control.removeAttribute("aria-invalid");
    }
    for (const slot of this.slots.values()) slot.textContent = "";
  }

  // Show an error at the field its path names (`prefix` is what the API's path has
  // before the object this form edits, e.g. /^services\[\d+\]\.?/, or a function from
  // the API's path to the form's), else above the form.
  showError(error, prefix = null) {
    this.clearErrors();
    let path = error.path ?? null;
    let message = error.message;
    if (path && message.startsWith(`${path}: `)) message = message.slice(path.length + 2);
    if (path && typeof prefix === "function") {
      path = prefix(path);
    } else if (path && prefix) {
      const match = path.match(prefix);
      path = match ? path.slice(match[0].length) : path;
    }
    const place = path === null ? null : this.place(path);
    if (place) {
      place.slot.textContent = message;
      if (place.control) {
        place.control.setAttribute("aria-invalid", "true");
        place.control.focus();
      }
      return;
    }
    this.general.textContent = error.status ? `${error.message}` : message;
  }

  place(path) {
    const within = (p) => path === p || path.startsWith(`${p}.`) || path.startsWith(`${p}[`);
    let best = null;
    for (const entry of this.fields) {
      const longer = !best || entry.spec.path.length > best.spec.path.length;
      if (!entry.wrap.hidden && within(entry.spec.path) && longer) best = entry;
    }
    for (const [p, slot] of this.slots) {
      if (within(p) && (!best || p.length > best.spec.path.length)) best = { spec: { path: p }, slot, control: null };
    }
    return best;
  }
}

// ------------------------------------------------------------------ dialogs

// A modal dialog named by its heading; removed from the page when closed.
export function openDialog(title, ...content) {
  const titleId = uid("dialog-title");
  const dialog = h("dialog", { "aria-labelledby": titleId }, h("h2", { id: titleId }, title), ...content);
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  // the first control takes the focus (the dialog itself would, without it)
  dialog.querySelector("input:not([readonly]):not([disabled]), select:not([disabled]), "
                       + "textarea:not([readonly]), button:not([disabled])")?.focus();
  return dialog;
}

// Asks `question`; "Delete" runs `remove` (an admin API call). True once it is done; an
// answer that refuses it (a reference to it, etcd unreachable, ...) is shown in the dialog,
// which stays open.
export function confirmDelete(question, remove, action = "Delete") {
  return new Promise((resolve) => {
    let done = false;
    const error = h("p", { class: "form-error", role: "alert" });
    const dialog = openDialog(question, error,
      h("div", { class: "actions" },
        h("button", { type: "button", class: "danger", onclick: async () => {
          error.textContent = "";
          try {
            await remove();
          } catch (failure) {
            if (!(failure instanceof ApiError)) throw failure;
            if (failure.status === 401) dialog.close(); // signed out: the page says so
            else error.textContent = failure.message;
            return;
          }
          done = true;
          dialog.close();
        } }, action),
        h("button", { type: "button", onclick: () => dialog.close() }, "Cancel")));
    dialog.addEventListener("close", () => resolve(done));
  });
}

// Something shown this once (a token, a generated secret), with a Copy button.
export function showOnce(title, label, value, warning) {
  const id = uid("once");
  const output = h("textarea", { id, readonly: true, rows: 4, class: "once", spellcheck: "false" });
  output.value = value;
  const copied = h("p", { class: "note", role: "status" });
  const dialog = openDialog(title,
    h("p", { class: "warning" }, warning),
    h("div", { class: "field" }, h("label", { for: id }, label), output),
    copied,
    h("div", { class: "actions" },
      h("button", { type: "button", onclick: async () => {
        output.select();
        try {
          await navigator.clipboard.writeText(value);
        } catch {
          document.execCommand("copy");
        }
        copied.textContent = "Copied.";
      } }, "Copy"),
      h("button", { type: "button", onclick: () => dialog.close() }, "Close")));
  output.focus();
  output.select();
  return dialog;
}
