// Consumers and their credentials; Generate JSON Web Token.

import { api } from "./api.js";
import {
  FieldError, Form, clear, confirmDelete, h, headRow, openDialog, showOnce, uid, viewLink,
} from "./dom.js";
import { CONSUMER_ACTIONS, CREDENTIAL_GROUPS } from "./extensions.js";
import { tokenDialog } from "./token.js";

const CONSUMER_PREFIX = /^consumers\[\d+\]\.?/;
const CREDENTIAL_PREFIX = /^consumers\[\d+\]\.credentials\[\d+\]\.?/;
const ALGORITHMS = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                    "ES256", "ES384", "ES512", "EdDSA"];
export const TYPES = { "jwt-auth": "JWT Auth", "key-auth": "Key Auth" };

const typeOf = (cred) => cred.type ?? "jwt-auth";

function heading(text) {
  return h("h1", { tabindex: "-1" }, text);
}

// ------------------------------------------------------------------ the list

export async function consumersList(main, go) {
  const consumers = await api.get("consumers");
  const search = h("input", { type: "search", id: uid("search"), autocomplete: "off", spellcheck: "false",
                              placeholder: "username or key" });
  const count = h("p", { class: "note", role: "status", "aria-live": "polite" });
  const rows = consumers.map((c) => {
    const keys = c.credentials.filter((k) => typeOf(k) === "jwt-auth").map((k) => k.key);
    const row = h("tr", {},
      h("td", {}, viewLink(c.username, "consumer", c.username)),
      h("td", {}, c.credentials.map((k) => TYPES[typeOf(k)] ?? typeOf(k)).join(", ")),
      h("td", {}, keys.join(", ")));
    row.dataset.search = [c.username, ...keys].join("\n").toLowerCase();
    return row;
  });
  const tbody = h("tbody", {}, rows);
  const filter = () => {
    const want = search.value.trim().toLowerCase();
    let shown = 0;
    for (const row of rows) {
      row.hidden = want !== "" && !row.dataset.search.includes(want);
      if (!row.hidden) shown += 1;
    }
    count.textContent = `${shown} of ${rows.length} consumers`;
  };
  search.addEventListener("input", filter);
  clear(main,
    heading("Consumers"),
    h("div", { class: "actions" }, h("button", { type: "button", onclick: () => go("consumer", null) }, "Create Consumer")),
    h("div", { class: "field search" }, h("label", { for: search.id }, "Search consumers"), search),
    count,
    h("table", { "aria-label": "Consumers", class: "list" },
      headRow("Username", "Credentials", "JWT keys"),
      tbody));
  filter();
}

// ------------------------------------------------------------------ one consumer

export async function consumerView(main, go, username) {
  if (username === null) return createConsumer(main, go);
  const consumer = await api.get("consumers", username);
  const jwtCreds = consumer.credentials.filter((k) => typeOf(k) === "jwt-auth");
  const refresh = (message) => go("consumer", username, message);
  const table = consumer.credentials.length
    ? h("table", { "aria-label": "Credentials" },
        headRow("ID", "Type", "Key", "Algorithm", ""),
        h("tbody", {}, consumer.credentials.map((cred) => h("tr", {},
          h("td", {}, cred.id),
          h("td", {}, TYPES[typeOf(cred)] ?? typeOf(cred)),
          h("td", {}, typeOf(cred) === "jwt-auth" ? cred.key : "(hidden)"),
          h("td", {}, cred.algorithm ?? ""),
          h("td", { class: "row-actions" },
            h("button", { type: "button", "aria-label": `Edit credential ${cred.id}`,
                          onclick: () => credentialDialog(consumer, cred, refresh) }, "Edit"),
            h("button", { type: "button", class: "danger", "aria-label": `Delete credential ${cred.id}`, onclick: async () => {
              if (!(await confirmDelete(`Delete credential ${cred.id}?`,
                () => api.remove("consumers", username, "credentials", cred.id)))) return;
              refresh("Credential deleted.");
            } }, "Delete"))))))
    : h("p", { class: "empty" }, "No credentials yet.");
  clear(main,
    heading(`Consumer ${username}`),
    h("section", { class: "card", "aria-labelledby": "credentials-title" },
      h("h2", { id: "credentials-title" }, "Credentials"),
      table,
      h("div", { class: "actions" },
        h("button", { type: "button", onclick: () => credentialDialog(consumer, null, refresh) }, "Add Credential"),
        h("button", { type: "button", disabled: jwtCreds.length === 0,
                      onclick: () => tokenDialog(consumer, jwtCreds) }, "Generate JSON Web Token"),
        CONSUMER_ACTIONS.map((action) => h("button", { type: "button",
                                                       onclick: () => action.run(consumer, refresh) }, action.label)))),
    h("div", { class: "actions" },
      h("button", { type: "button", onclick: () => go("consumers") }, "Back to consumers"),
      h("button", { type: "button", class: "danger", onclick: async () => {
        if (!(await confirmDelete(`Delete consumer ${username}?`,
          () => api.remove("consumers", username)))) return;
        go("consumers", "Consumer deleted.");
      } }, "Delete Consumer")));
}

function createConsumer(main, go) {
  const form = new Form({ credentials: [] }, { isNew: true });
  const element = h("form", { novalidate: true, "aria-label": "Consumer" },
    form.field({ path: "username", label: "Username", placeholder: "oiloil" }),
    form.general,
    h("div", { class: "actions" },
      h("button", { type: "submit" }, "Create"),
      h("button", { type: "button", onclick: () => go("consumers") }, "Back to consumers")));
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    form.clearErrors();
    const consumer = form.collect();
    if (!consumer.username) return form.showError(new FieldError("username", "is required"));
    try {
      await api.create(["consumers", consumer.username], consumer);
      go("consumer", consumer.username, "Consumer created.");
    } catch (error) {
      form.showError(error, CONSUMER_PREFIX);
    }
  });
  clear(main, heading("Create Consumer"), h("section", { class: "card" }, element));
}

// ------------------------------------------------------------------ credentials

// 64 random bytes, URL-safe base64: as long as HS512's hash, so enough for every HS* (RFC
// 7518 3.2 asks for a key at least the hash's size)
function randomSecret() {
  const bytes = crypto.getRandomValues(new Uint8Array(64));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomButton(label) {
  return (control) => h("button", { type: "button", "aria-label": label, onclick: () => {
    control.value = randomSecret();
    control.dispatchEvent(new Event("input", { bubbles: true }));
    control.focus();
  } }, "Random");
}

function typeFields(form, kind) {
  if (kind === "key-auth") {
    return [form.field({ path: "key", label: "API key", kind: "secret", after: randomButton("Random API key"),
      help: "Left empty, the server generates one and shows it once." })];
  }
  const groups = (CREDENTIAL_GROUPS[kind] ?? []).filter((g) => g.fields.length);
  return [
    form.field({ path: "key", label: "Key", placeholder: "oiloil_key",
      help: "Tokens name their credential by this key (their key claim)." }),
    form.field({ path: "secret", label: "Secret", kind: "secret", after: randomButton("Random secret"),
      help: "For HS256/384/512. Left empty, the server generates one and shows it once." }),
    form.field({ path: "base64_secret", label: "Secret is base64-encoded", kind: "checkbox", default: false }),
    form.field({ path: "algorithm", label: "Algorithm", kind: "select", default: "HS256",
      options: ALGORITHMS.map((a) => [a, a]) }),
    form.field({ path: "public_key", label: "Public key", kind: "textarea", nullable: true, rows: 3,
      placeholder: "-----BEGIN PUBLIC KEY-----", help: "PEM, for RS*, PS*, ES* and EdDSA." }),
    form.field({ path: "private_key", label: "Private key", kind: "secret", multiline: true, rows: 3, nullable: true,
      help: "PEM, only needed to generate tokens for RS*, PS*, ES* and EdDSA." }),
    form.field({ path: "exp", label: "Token lifetime (seconds)", kind: "number", default: undefined,
      help: "How long generated tokens are valid by default (86400 when empty)." }),
    form.field({ path: "lifetime_grace_period", label: "Clock-skew leeway (seconds)", kind: "number" }),
    groups.map((group) => h("fieldset", { class: "extension" }, h("legend", {}, group.legend),
      group.fields.map((spec) => form.field(spec)))),
  ];
}

// Add (cred null) or edit a credential. Its object is kept as fetched ("***" for a
// secret, which the admin API takes as "unchanged").
export function credentialDialog(consumer, cred, refresh) {
  const isNew = cred === null;
  let form;
  const typeId = uid("type");
  const typeSelect = h("select", { id: typeId, disabled: !isNew },
    Object.entries(TYPES).map(([value, text]) => h("option", { value }, text)));
  typeSelect.value = isNew ? "jwt-auth" : typeOf(cred);
  const specific = h("div", {});
  const idField = h("div", {});
  const general = h("div", {});
  const build = () => {
    form = new Form(isNew ? { type: typeSelect.value } : cred, { isNew });
    clear(idField, form.field({ path: "id", label: "ID", readonly: !isNew,
      help: !isNew ? null : typeSelect.value === "jwt-auth" ? "Optional: the key when empty."
        : `Optional: ${nextKeyAuthId(consumer)} when empty.` }));
    clear(specific, typeFields(form, typeSelect.value));
    clear(general, form.general);
  };
  typeSelect.addEventListener("change", build);
  build();
  const element = h("form", { novalidate: true },
    h("div", { class: "field" }, h("label", { for: typeId }, "Type"), typeSelect),
    idField, specific, general,
    h("div", { class: "actions" },
      h("button", { type: "submit" }, isNew ? "Add" : "Save"),
      h("button", { type: "button", onclick: () => dialog.close() }, "Cancel")));
  const dialog = openDialog(isNew ? `Add Credential to ${consumer.username}` : `Credential ${cred.id}`, element);
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    form.clearErrors();
    let out;
    try {
      out = form.collect();
    } catch (error) {
      if (error instanceof FieldError) return form.showError(error);
      throw error;
    }
    const kind = typeSelect.value;
    const id = out.id ?? (kind === "jwt-auth" ? out.key : nextKeyAuthId(consumer));
    if (!id) return form.showError(new FieldError("key", "is required"));
    out.id = id;
    try {
      const saved = await (isNew ? api.create : api.put)(
        ["consumers", consumer.username, "credentials", id], out);
      dialog.close();
      const field = kind === "jwt-auth" ? "secret" : "key";
      if (saved[field] && saved[field] !== "***" && out[field] === undefined) {
        const what = kind === "jwt-auth" ? "secret" : "API key";
        showOnce(`Generated ${what}`, what === "secret" ? "Secret" : "API key", saved[field],
                 `The server generated this ${what}. Copy it now: it will not be shown again.`)
          .addEventListener("close", () => refresh("Credential saved."));
      } else {
        refresh("Credential saved.");
      }
    } catch (error) {
      form.showError(error, error.path && error.path.startsWith("consumers") ? CREDENTIAL_PREFIX : null);
    }
  });
}

function nextKeyAuthId(consumer) {
  const base = `${consumer.username}-key-auth`;
  const ids = new Set(consumer.credentials.map((c) => c.id));
  if (!ids.has(base)) return base;
  let n = 2;
  while (ids.has(`${base}-${n}`)) n += 1;
  return `${base}-${n}`;
}
