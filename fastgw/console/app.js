// The console's frame: sign-in, the sections, and which view is shown.

import { ApiError, adminKey, call, whenUnauthorised } from "./api.js";
import { h } from "./dom.js";
import { consumerView, consumersList } from "./consumers.js";
import { routeView, serviceView, servicesList } from "./services.js";
import { statusView } from "./status.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const signIn = document.getElementById("sign-in");
const signInForm = document.getElementById("sign-in-form");
const keyInput = document.getElementById("admin-key");
const signInError = document.getElementById("sign-in-error");
const signOut = document.getElementById("sign-out");

const VIEWS = {
  services: { section: "services", show: () => servicesList(main, go) },
  service: { section: "services", show: (name) => serviceView(main, go, name) },
  route: { section: "services", show: (service, route) => routeView(main, go, service, route) },
  consumers: { section: "consumers", show: () => consumersList(main, go) },
  consumer: { section: "consumers", show: (username) => consumerView(main, go, username) },
  status: { section: "status", show: () => statusView(main) },
};

// Show a view; a trailing string argument is a notice shown above it ("Service saved.").
async function go(view, ...args) {
  const { section, show } = VIEWS[view];
  const arity = { services: 0, consumers: 0, status: 0, service: 1, consumer: 1, route: 2 }[view];
  const notice = args.length > arity ? args.pop() : null;
  for (const button of nav.querySelectorAll("button")) {
    if (button.dataset.view === section) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  try {
    await show(...args);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    if (error.status === 401) return;
    main.replaceChildren(h("h1", { tabindex: "-1" }, "Error"), h("p", { class: "form-error", role: "alert" }, error.message));
  }
  if (notice) main.prepend(h("p", { class: "notice", role: "status" }, notice));
  main.querySelector("h1")?.focus();
}

function signedIn(yes) {
  signIn.hidden = yes;
  main.hidden = nav.hidden = signOut.hidden = !yes;
  if (!yes) {
    main.replaceChildren();
    keyInput.focus();
  }
}

whenUnauthorised(() => {
  adminKey.forget();
  signedIn(false);
  signInError.textContent = "The admin key is no longer accepted: sign in again.";
});

signInForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  signInError.textContent = "";
  keyInput.removeAttribute("aria-invalid");
  const key = keyInput.value;
  try {
    await call("GET", ["status"], undefined, key);
  } catch (error) {
    keyInput.setAttribute("aria-invalid", "true");
    signInError.textContent = error.status === 401 ? "Wrong admin key." : error.message;
    return;
  }
  adminKey.set(key);
  keyInput.value = "";
  signedIn(true);
  go("services");
});

signOut.addEventListener("click", () => {
  adminKey.forget();
  signedIn(false);
});

nav.addEventListener("click", (event) => {
  const view = event.target.closest("button")?.dataset.view;
  if (view) go(view);
});

if (adminKey.get()) {
  signedIn(true);
  go("services");
} else {
  signedIn(false);
}
