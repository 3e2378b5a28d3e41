// Services and their routes: list, create, edit, delete; their plugins.

import { api } from "./api.js";
import { FieldError, Form, clear, confirmDelete, h, headRow, uid, viewLink } from "./dom.js";
import { pluginSection } from "./plugins.js";

const METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", "PURGE"];
const SERVICE_PREFIX = /^services\[\d+\]\.?/;
const ROUTE_PREFIX = /^services\[\d+\]\.routes\[\d+\]\.?/;

function heading(text) {
  return h("h1", { tabindex: "-1" }, text);
}

function upstreamText(up) {
  if (!up) return "";
  if (up.url) return up.url;
  return (up.nodes ?? []).map((n) => `${up.scheme ?? "http"}://${n.host}:${n.port}`).join(", ");
}

// ------------------------------------------------------------------ the list

export async function servicesList(main, go) {
  const services = await api.get("services");
  const rows = services.map((s) => h("tr", {},
    h("td", {}, viewLink(s.name, "service", s.name)),
    h("td", {}, (s.hosts ?? []).join(", ") || "any host"),
    h("td", {}, s.path_prefix),
    h("td", {}, upstreamText(s.upstream)),
    h("td", {}, (s.routes ?? []).map((r) => r.name).join(", ")),
    h("td", { class: "row-actions" },
      h("button", { type: "button", class: "danger", "aria-label": `Delete service ${s.name}`, onclick: async () => {
        if (!(await confirmDelete(`Delete service ${s.name}?`,
          () => api.remove("services", s.name)))) return;
        go("services");
      } }, "Delete"))));
  clear(main,
    heading("Services"),
    h("div", { class: "actions" }, h("button", { type: "button", onclick: () => go("service", null) }, "Create Service")),
    services.length
      ? h("table", { "aria-label": "Services" },
          headRow("Name", "Hosts", "Path prefix", "Upstream", "Routes", ""),
          h("tbody", {}, rows))
      : h("p", { class: "empty" }, "No services yet."));
}

// ------------------------------------------------------------------ one service

function nodesText(nodes) {
  return (nodes ?? []).map((n) => {
    const host = n.host.includes(":") ? `[${n.host}]` : n.host;
    return `${host}:${n.port}${n.weight === undefined || n.weight === 1 ? "" : ` ${n.weight}`}`;
  }).join("\n");
}

function readNodes(text) {
  const nodes = [];
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const m = line.match(/^(\[[^\]]+\]|[^\s:[\]]+):(\d+)(?:\s+(\d+))?$/);
    if (!m) throw new FieldError("upstream.nodes", `${line}: expected host:port, optionally followed by a weight`);
    const node = { host: m[1].replace(/^\[|\]$/g, ""), port: Number(m[2]) };
    if (m[3] !== undefined) node.weight = Number(m[3]);
    nodes.push(node);
  }
  return nodes;
}

export async function serviceView(main, go, name) {
  const isNew = name === null;
  const original = isNew ? { routes: [] } : await api.get("services", name);
  const form = new Form(original, { isNew });
  const byNodes = !isNew && original.upstream && original.upstream.nodes;
  const kindName = uid("upstream-kind");
  const urlRadio = h("input", { type: "radio", name: kindName, id: uid("radio"), value: "url", checked: !byNodes });
  const nodesRadio = h("input", { type: "radio", name: kindName, id: uid("radio"), value: "nodes", checked: Boolean(byNodes) });
  const urlField = form.field({ path: "upstream.url", label: "Upstream URL", nullable: true,
    placeholder: "https://httpbin.org", help: "scheme://host[:port][/base-path]" });
  const nodesField = form.field({ path: "upstream.nodes", label: "Nodes", kind: "textarea", rows: 3,
    show: nodesText, read: readNodes, placeholder: "10.0.0.5:8080\n10.0.0.6:8080 2",
    help: "One node a line: host:port, optionally followed by its weight." });
  const schemeField = form.field({ path: "upstream.scheme", label: "Scheme", kind: "select",
    options: [["http", "http"], ["https", "https"]], default: "http" });
  const showKind = () => {
    urlField.hidden = nodesRadio.checked;
    nodesField.hidden = schemeField.hidden = !nodesRadio.checked;
  };
  urlRadio.addEventListener("change", showKind);
  nodesRadio.addEventListener("change", showKind);
  showKind();

  const element = h("form", { novalidate: true, "aria-label": "Service" },
    form.field({ path: "name", label: "Name", readonly: !isNew, placeholder: "jwt-auth-app" }),
    form.field({ path: "hosts", label: "Hosts", kind: "list", placeholder: "cloud.httpbin.org",
      help: "Host names or *.domain patterns, separated by commas; empty for any host." }),
    form.field({ path: "path_prefix", label: "Path prefix", default: "/", placeholder: "/v1" }),
    form.field({ path: "strip_path_prefix", label: "Strip path prefix", kind: "checkbox", default: true,
      help: "The upstream sees the path without the prefix." }),
    h("fieldset", {},
      h("legend", {}, "Upstream"),
      h("div", { class: "radios", role: "radiogroup", "aria-label": "Upstream by" },
        h("span", { class: "radio" }, urlRadio, h("label", { for: urlRadio.id }, "URL")),
        h("span", { class: "radio" }, nodesRadio, h("label", { for: nodesRadio.id }, "Nodes"))),
      urlField, nodesField, schemeField, form.slot("upstream")),
    form.general,
    h("div", { class: "actions" },
      h("button", { type: "submit" }, isNew ? "Create" : "Save"),
      h("button", { type: "button", onclick: () => go("services") }, "Back to services")));

  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    form.clearErrors();
    let service;
    try {
      service = form.collect();
      if (!service.name) throw new FieldError("name", "is required");
      if (isNew || urlRadio.checked !== !byNodes) { // the kind of upstream changed
        service.upstream = service.upstream ?? {};
        if (urlRadio.checked) service.upstream.nodes = null;
        else service.upstream.url = null;
      }
      if (urlRadio.checked) delete service.upstream?.scheme; // the url's scheme is the scheme
    } catch (error) {
      if (error instanceof FieldError) return form.showError(error);
      throw error;
    }
    try {
      if (!isNew) { // routes and plugins as they are now: changed elsewhere since, maybe
        const fresh = await api.get("services", name);
        service.routes = fresh.routes;
        service.plugins = fresh.plugins;
      }
      await (isNew ? api.create : api.put)(["services", service.name], service);
      go("service", service.name, isNew ? "Service created." : "Service saved.");
    } catch (error) {
      form.showError(error, SERVICE_PREFIX);
    }
  });

  const parts = [heading(isNew ? "Create Service" : `Service ${name}`), h("section", { class: "card" }, element)];
  if (!isNew) {
    let current = original;
    parts.push(pluginSection({
      what: "service", name,
      plugins: () => current.plugins ?? {},
      save: async (plugins) => {
        current = await api.put(["services", name], { ...(await api.get("services", name)), plugins });
        form.original.plugins = structuredClone(current.plugins); // the form saves these next
      },
      errorPrefix: (plugin) => new RegExp(`^services\\[\\d+\\]\\.plugins\\.${plugin}\\.?`),
      report: (error) => form.showError(error, SERVICE_PREFIX),
    }));
    parts.push(routesSection(go, original));
  }
  clear(main, ...parts);
}

function routesSection(go, service) {
  const routes = service.routes ?? [];
  return h("section", { class: "card", "aria-labelledby": "routes-title" },
    h("h2", { id: "routes-title" }, "Routes"),
    routes.length
      ? h("table", { "aria-label": "Routes" },
          headRow("Name", "Paths", "Methods", "Plugins", ""),
          h("tbody", {}, routes.map((r) => h("tr", {},
            h("td", {}, viewLink(r.name, "route", service.name, r.name)),
            h("td", {}, r.paths.join(", ")),
            h("td", {}, r.methods.length ? r.methods.join(", ") : "any"),
            h("td", {}, Object.keys(r.plugins ?? {}).join(", ")),
            h("td", { class: "row-actions" },
              h("button", { type: "button", class: "danger", "aria-label": `Delete route ${r.name}`, onclick: async () => {
                if (!(await confirmDelete(`Delete route ${r.name}?`,
                  () => api.remove("services", service.name, "routes", r.name)))) return;
                go("service", service.name);
              } }, "Delete"))))))
      : h("p", { class: "empty" }, "No routes yet."),
    h("div", { class: "actions" }, h("button", { type: "button", onclick: () => go("route", service.name, null) }, "Add Route")));
}

// ------------------------------------------------------------------ one route

function methodsControl(form, original, isNew) {
  const boxes = METHODS.map((method) => {
    const box = h("input", { type: "checkbox", id: uid("method"), value: method,
                             checked: (original.methods ?? []).includes(method) });
    return [box, h("span", { class: "radio" }, box, h("label", { for: box.id }, method))];
  });
  const element = h("fieldset", { class: "methods" }, h("legend", {}, "Methods"),
    h("p", { class: "help" }, "None checked: every method."), boxes.map(([, wrap]) => wrap));
  const chosen = () => boxes.filter(([box]) => box.checked).map(([box]) => box.value);
  return form.custom({ path: "methods", element, focus: boxes[0][0],
                       get: () => chosen().join(","), read: chosen });
}

export async function routeView(main, go, serviceName, name) {
  const isNew = name === null;
  const original = isNew ? {} : await api.get("services", serviceName, "routes", name);
  const form = new Form(original, { isNew });
  const element = h("form", { novalidate: true, "aria-label": "Route" },
    form.field({ path: "name", label: "Name", readonly: !isNew, placeholder: "json" }),
    form.field({ path: "paths", label: "Paths", kind: "list", keepEmpty: true, placeholder: "/json",
      help: 'After the service\'s path prefix, separated by commas; "/x/*" matches every path under /x/.' }),
    methodsControl(form, original, isNew),
    form.field({ path: "priority", label: "Priority", kind: "number", help: "Higher wins among equal matches." }),
    form.general,
    h("div", { class: "actions" },
      h("button", { type: "submit" }, isNew ? "Create" : "Save"),
      h("button", { type: "button", onclick: () => go("service", serviceName) }, `Back to service ${serviceName}`)));
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    form.clearErrors();
    let route;
    try {
      route = form.collect();
      if (!route.name) throw new FieldError("name", "is required");
      if (!route.paths) throw new FieldError("paths", "needs at least one path");
    } catch (error) {
      if (error instanceof FieldError) return form.showError(error);
      throw error;
    }
    try {
      if (!isNew) route.plugins = (await api.get("services", serviceName, "routes", name)).plugins;
      await (isNew ? api.create : api.put)(["services", serviceName, "routes", route.name], route);
      go("route", serviceName, route.name, isNew ? "Route created." : "Route saved.");
    } catch (error) {
      form.showError(error, ROUTE_PREFIX);
    }
  });
  const parts = [heading(isNew ? `Add Route to ${serviceName}` : `Route ${name}`),
                 h("p", { class: "crumb" }, "in service ", h("strong", {}, serviceName)),
                 h("section", { class: "card" }, element)];
  if (!isNew) {
    let current = original;
    parts.push(pluginSection({
      what: "route", name,
      plugins: () => current.plugins ?? {},
      save: async (plugins) => {
        current = await api.put(["services", serviceName, "routes", name],
                                { ...(await api.get("services", serviceName, "routes", name)), plugins });
        form.original.plugins = structuredClone(current.plugins); // the form saves these next
      },
      errorPrefix: (plugin) => new RegExp(`^services\\[\\d+\\]\\.routes\\[\\d+\\]\\.plugins\\.${plugin}\\.?`),
      report: (error) => form.showError(error, ROUTE_PREFIX),
    }));
  }
  clear(main, ...parts);
}
