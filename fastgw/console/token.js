// Generate JSON Web Token: an expiry, payload rows, and the token shown once.

import { JsonText, api } from "./api.js";
import { FieldError, Form, h, openDialog, showOnce, uid } from "./dom.js";

// A payload value as the JSON text it is sent as. JSON keeps its type and its very digits:
// 18 is a number, true a boolean, "18" (with the quotes) a string, 9007199254740993 that
// integer (a number of JavaScript's would be 9007199254740992); anything that is not JSON
// is the string as typed (oiloil), as `fastgw token --claim` reads it.
export function claimJson(text) {
  try {
    JSON.parse(text);
  } catch {
    return JSON.stringify(text);
  }
  return text.trim();
}

function localInput(date) {
  const pad = (n) => String(n).padStart(2, "0");
  const day = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
  return `${day}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

export function tokenDialog(consumer, credentials) {
  const form = new Form({});
  const credId = uid("credential");
  const credSelect = h("select", { id: credId },
    credentials.map((c) => h("option", { value: c.id }, `${c.id} (${c.algorithm})`)));
  const expiresId = uid("expires");
  const tomorrow = new Date(Date.now() + 86400e3);
  const expires = h("input", { type: "datetime-local", id: expiresId, value: localInput(tomorrow), step: "1" });
  const rows = h("div", { class: "payload" });
  let count = 0;
  const addRow = (name = "", value = "") => {
    count += 1;
    const n = count;
    const input = (what, value) => h("input", { type: "text", "aria-label": `Payload field ${n} ${what}`,
                                                value, autocomplete: "off", spellcheck: "false" });
    const nameInput = input("name", name);
    const valueInput = input("value", value);
    const row = h("div", { class: "payload-row" }, nameInput, valueInput,
      h("button", { type: "button", "aria-label": `Remove payload field ${n}`, onclick: () => row.remove() }, "Remove"));
    row.fields = [nameInput, valueInput];
    row.path = `payload.${n}`; // its errors' place; the API names it claims.<its name>
    rows.append(form.custom({ path: row.path, element: row, focus: valueInput,
                              get: () => `${nameInput.value}\n${valueInput.value}`, read: () => undefined }));
    return nameInput;
  };
  addRow();
  const element = h("form", { novalidate: true },
    h("div", { class: "field" }, h("label", { for: credId }, "Credential"), credSelect),
    form.custom({ path: "expires", focus: expires, get: () => expires.value, read: () => expires.value,
                  element: h("div", { class: "field" }, h("label", { for: expiresId }, "Expires at"), expires,
                    h("p", { class: "help" }, "Your local time. Empty: the credential's token lifetime from now.")) }),
    h("fieldset", {}, h("legend", {}, "Payload"),
      h("p", { class: "help" }, 'Values keep their JSON type: 18 is a number, true a boolean, "18" a string.'),
      rows,
      h("button", { type: "button", onclick: () => addRow().focus() }, "Add payload field")),
    form.general,
    h("div", { class: "actions" },
      h("button", { type: "submit" }, "Generate"),
      h("button", { type: "button", onclick: () => dialog.close() }, "Cancel")));
  const dialog = openDialog(`Generate JSON Web Token for ${consumer.username}`, element);
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    form.clearErrors();
    const claims = new Map(); // a name given twice: the last row's value
    const rowPaths = new Map(); // claims.<name> -> that row's path
    for (const row of rows.children) {
      const [nameInput, valueInput] = row.fields;
      const name = nameInput.value.trim();
      if (name === "") continue;
      claims.set(name, claimJson(valueInput.value));
      rowPaths.set(`claims.${name}`, row.path);
    }
    const payload = [...claims].map(([name, json]) => `${JSON.stringify(name)}:${json}`);
    const body = [`"claims":{${payload.join(",")}}`];
    if (expires.value) {
      const when = new Date(expires.value).getTime();
      if (Number.isNaN(when)) return form.showError(new FieldError("expires", "is not a date and time"));
      body.push(`"expires":${Math.floor(when / 1000)}`);
    }
    try {
      const { token } = await api.post(["consumers", consumer.username, "credentials", credSelect.value, "token"],
                                       new JsonText(`{${body.join(",")}}`));
      dialog.close();
      showOnce("JSON Web Token", "Token", token,
               "This token will not be shown again. Copy it now and keep it safe.");
    } catch (error) {
      form.showError(error, (path) => rowPaths.get(path) ?? path);
    }
  });
}
