// Status: version, configuration revision, workers, where the configuration lives.

import { api } from "./api.js";
import { clear, h } from "./dom.js";

export async function statusView(main) {
  const s = await api.get("status");
  const etcd = s.etcd_connected === undefined ? "not used (configuration from a file)"
    : s.etcd_connected ? "connected" : "disconnected";
  const rows = [
    ["Version", s.version],
    ["Configuration revision", String(s.revision)],
    ["Workers", `${s.workers.length} (pids ${s.workers.join(", ")})`],
    ["Worker restarts", String(s.worker_restarts ?? 0)],
    ["Configuration source", s.config_source],
    ["etcd", etcd],
  ];
  clear(main,
    h("h1", { tabindex: "-1" }, "Status"),
    h("section", { class: "card" },
      h("dl", { class: "status", "aria-label": "Gateway status" },
        rows.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]))),
    h("div", { class: "actions" }, h("button", { type: "button", onclick: () => statusView(main) }, "Refresh")));
}
