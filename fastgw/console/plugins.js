// The plugins a route or a service can have, by category, with the guide's names, and
// the dialog that adds or edits one. Saving the dialog saves its owner (route or service).

import { Form, FieldError, confirmDelete, h, openDialog } from "./dom.js";
import { PLUGIN_GROUPS } from "./extensions.js";

const STRIP = {
  path: "hide_credentials", label: "Strip Credentials", kind: "checkbox", default: false,
  help: "Remove the credential from the request before it goes upstream.",
};
const ANONYMOUS = {
  path: "anonymous_consumer", label: "Anonymous consumer", nullable: true,
  help: "A consumer's username, used when a request carries no credential (optional).",
};

export const CATALOGUE = [
  {
    category: "Authentication",
    plugins: [
      {
        name: "jwt-auth", title: "JWT Auth",
        about: "Requests must carry a JSON Web Token signed for a consumer's credential.",
        fields: [
          { path: "header", label: "Header", default: "Authorization",
            help: "The header carrying the token (a Bearer prefix is optional)." },
          { path: "query", label: "Query", default: "jwt", help: "The query parameter carrying the token." },
          { path: "cookie", label: "Cookie", default: "jwt", help: "The cookie carrying the token." },
          STRIP,
          { path: "key_claim_name", label: "Key claim", default: "key",
            help: "The claim naming the credential's key." },
          ANONYMOUS,
        ],
      },
      {
        name: "key-auth", title: "Key Auth",
        about: "Requests must carry a consumer's API key.",
        fields: [
          { path: "header", label: "Header", default: "apikey", help: "The header carrying the key." },
          { path: "query", label: "Query", default: "apikey", help: "The query parameter carrying the key." },
          STRIP,
          ANONYMOUS,
        ],
      },
    ],
  },
];

export function pluginInfo(name) {
  for (const { plugins } of CATALOGUE) {
    const found = plugins.find((p) => p.name === name);
    if (found) return found;
  }
  return { name, title: name, about: "", fields: [] };
}

// The list of an owner's plugins with Edit / Remove, and Add Plugin.
// owner: {what: "route"|"service", name, plugins(), save(plugins) -> Promise, errorPrefix(name)}
export function pluginSection(owner) {
  const list = h("ul", { class: "plugins", "aria-label": `Plugins of ${owner.what} ${owner.name}` });
  const section = h("section", { class: "card", "aria-label": `Plugins of this ${owner.what}` },
    h("h2", {}, "Plugins"),
    list,
    h("div", { class: "actions" },
      h("button", { type: "button", onclick: () => chooser(owner, render) }, "Add Plugin")));

  function render() {
    const plugins = owner.plugins();
    const names = Object.keys(plugins);
    list.replaceChildren(...(names.length ? names.map((name) => {
      const info = pluginInfo(name);
      return h("li", {},
        h("span", { class: "plugin-name" }, info.title), " ", h("code", {}, name),
        h("span", { class: "row-actions" },
          h("button", { type: "button", "aria-label": `Edit ${info.title}`,
                        onclick: () => pluginDialog(owner, info, plugins[name], render) }, "Edit"),
          h("button", { type: "button", class: "danger", "aria-label": `Remove ${info.title}`,
                        onclick: async () => {
                          const next = { ...owner.plugins() };
                          delete next[name];
                          // one click would open the API (an auth plugin): asked, as deletes are
                          const warning = CATALOGUE.some(({ category, plugins: group }) =>
                            category === "Authentication" && group.some((p) => p.name === name))
                            ? " Requests will reach the upstream without it." : "";
                          if (await confirmDelete(`Remove ${info.title} from ${owner.what} ${owner.name}?${warning}`,
                                                  () => owner.save(next), "Remove")) render();
                        } }, "Remove")));
    }) : [h("li", { class: "empty" }, "No plugins.")]));
  }
  render();
  return section;
}

function chooser(owner, render) {
  let dialog;
  const body = h("div", { class: "chooser" }, CATALOGUE.map(({ category, plugins }) => {
    const listId = `${category}-plugins`.toLowerCase();
    const items = h("ul", { id: listId, class: "choices", hidden: true },
      plugins.map((info) => h("li", {},
        h("button", { type: "button", onclick: () => {
          dialog.close();
          pluginDialog(owner, info, owner.plugins()[info.name], render);
        } }, info.title),
        h("span", { class: "help" }, " ", info.about))));
    const toggle = h("button", { type: "button", class: "category", "aria-expanded": "false",
                                 "aria-controls": listId, onclick: () => {
      items.hidden = !items.hidden;
      toggle.setAttribute("aria-expanded", String(!items.hidden));
      if (!items.hidden) items.querySelector("button").focus();
    } }, category);
    return [toggle, items];
  }));
  dialog = openDialog("Add Plugin", body,
    h("div", { class: "actions" }, h("button", { type: "button", onclick: () => dialog.close() }, "Cancel")));
}

// Add (conf undefined) or edit one plugin; its conf is kept as fetched and only the
// changed fields are written.
export function pluginDialog(owner, info, conf, render) {
  const isNew = conf === undefined;
  const form = new Form(conf ?? {}, { isNew });
  const element = h("form", { novalidate: true },
    h("p", { class: "help" }, info.about),
    info.fields.map((spec) => form.field(spec)),
    (PLUGIN_GROUPS[info.name] ?? []).filter((g) => g.fields.length).map((group) =>
      h("fieldset", {}, h("legend", {}, group.legend), group.fields.map((spec) => form.field(spec)))),
    form.general,
    h("div", { class: "actions" },
      h("button", { type: "submit" }, isNew ? "Add" : "Save"),
      h("button", { type: "button", onclick: () => dialog.close() }, "Cancel")));
  const dialog = openDialog(`${info.title} on ${owner.what} ${owner.name}`, element);
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    form.clearErrors();
    let plugins;
    try {
      plugins = { ...owner.plugins(), [info.name]: form.collect() };
    } catch (error) {
      if (error instanceof FieldError) return form.showError(error);
      throw error;
    }
    try {
      await owner.save(plugins);
      dialog.close();
      render();
    } catch (error) {
      form.showError(error, owner.errorPrefix(info.name));
    }
  });
}
