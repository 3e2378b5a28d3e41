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

// Actions offered on a consumer beside Generate JSON Web Token (a Revoke, SPEC section 9):
// {label, run(consumer, refresh)}.
export const CONSUMER_ACTIONS = [];
