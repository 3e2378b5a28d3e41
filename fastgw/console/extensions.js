import { api } from "./api.js";
import { Form, h, openDialog } from "./dom.js";

// Fields that other features add to the forms, kept apart so that each is one entry here.
//
// Each entry is a field spec as `Form.field` takes it:
//   {path, label, kind: "text" | "list" | "number" | "json" | "checkbox" | "select" | "textarea",
//    help, options (for select: [[value, text], ...]), nullable}
// A group is rendered as its own fieldset, after the fields it extends, only when it has
// entries; like every field, an entry is sent only when the user changed it, so an
// object that holds such fields keeps them when edited by a console that does not list them.

// A jwt-auth credential's key set (SPEC section 8), instead of its secret / public key.
// Add the fields as the configuration schema takes them, e.g.
//   {path: "jwks_uri", label: "Key set URL", kind: "text", nullable: true},
//   {path: "oidc_issuer", label: "OIDC issuer", kind: "text", nullable: true},
//   {path: "issuer", label: "Issuer", kind: "text", nullable: true},
//   {path: "jwks_refresh", label: "Refresh (seconds)", kind: "number"},
export const CREDENTIAL_GROUPS = {
  "jwt-auth": [
    { legend: "Key set (identity provider)", fields: [
      { path: "jwks_uri", label: "Key set URL", kind: "text", nullable: true,
        help: "instead of a secret or public key: the provider's JSON Web Key Set" },
      { path: "oidc_issuer", label: "OIDC issuer", kind: "text", nullable: true,
        help: "or the issuer URL: its key set is found by discovery" },
      { path: "issuer", label: "Issuer", kind: "text", nullable: true,
        help: "the token's iss must equal it" },
      { path: "jwks_refresh", label: "Refresh (seconds)", kind: "number" },
      { path: "jwks_max_stale", label: "Serve stale keys for (seconds)", kind: "number" },
      { path: "jwks_refetch_cooldown", label: "Refetch cooldown (seconds)", kind: "number" },
      { path: "jwks_ca_file", label: "CA file", kind: "text", nullable: true },
    ] },
  ],
  "key-auth": [],
};

// A plugin's further settings (SPEC section 8's token policy on jwt-auth), e.g.
//   {path: "audiences", label: "Audiences", kind: "list"},
//   {path: "required_claims", label: "Required claims", kind: "list"},
//   {path: "required_scopes", label: "Required scopes", kind: "list"},
//   {path: "max_lifetime", label: "Maximum lifetime (seconds)", kind: "number", nullable: true},
//   {path: "claims_to_headers", label: "Claims to headers (JSON object)", kind: "json"},
export const PLUGIN_GROUPS = {
  "jwt-auth": [
    { legend: "Token policy", fields: [
      { path: "audiences", label: "Audiences", kind: "list", nullable: true },
      { path: "required_claims", label: "Required claims", kind: "list" },
      { path: "required_scopes", label: "Required scopes", kind: "list" },
      { path: "max_lifetime", label: "Maximum lifetime (seconds)", kind: "number", nullable: true },
      { path: "claims_to_headers", label: "Claims to headers (JSON object)", kind: "json" },
    ] },
  ],
  "key-auth": [],
};

// Actions offered on a consumer beside Generate JSON Web Token: {label, run(consumer, refresh)}.
// Revoke Tokens (SPEC section 9): one token by its jti, or every token of a subject issued
// before a time ("sign out everywhere"), optionally for one issuer only.
export const CONSUMER_ACTIONS = [{ label: "Revoke Tokens", run: revokeDialog }];

function revokeDialog(consumer, refresh) {
  const form = new Form({}, { isNew: true });
  const element = h("form", { novalidate: true, "aria-label": "Revoke tokens" },
    h("p", { class: "help" }, "By Token ID: that one token. By Subject with Issued before: every "
      + "token of the subject issued before then. Times are UNIX seconds."),
    form.field({ path: "jti", label: "Token ID (jti)" }),
    form.field({ path: "sub", label: "Subject (sub)" }),
    form.field({ path: "issued_before", label: "Issued before", kind: "number" }),
    form.field({ path: "iss", label: "Only from issuer (iss)" }),
    form.field({ path: "expires", label: "Forget the entry at", kind: "number",
                 help: "empty: in 30 days; the token's own exp is enough" }),
    form.general,
    h("div", { class: "actions" },
      h("button", { type: "submit" }, "Revoke"),
      h("button", { type: "button", onclick: () => dialog.close() }, "Cancel")));
  const dialog = openDialog(`Revoke tokens of ${consumer.username}`, element);
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    form.clearErrors();
    try {
      const entry = await api.post(["revocations"], form.collect());
      dialog.close();
      refresh(`Revoked (entry ${entry.id}).`);
    } catch (error) {
      form.showError(error);
    }
  });
}
