// The console's frame: sign-in, the sections, and which view is shown.

import { ApiError, adminKey, call, whenUnauthorised } from "./api.js";
import { ARITY, h, parseHash, viewHash } from "./dom.js";
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

// Show a view: its address goes in the fragment, and the fragment decides what is shown.
// A trailing string argument is a notice shown above it ("Service saved.").
let notice = null;
function go(view, ...args) {
  if (args.length > ARITY[view]) notice = args.pop();
  const hash = viewHash(view, ...args);
  if (location.hash === hash) render();
  else location.hash = hash; // hashchange renders it
}

let rendering = 0;
async function render() {
  if (!adminKey.get()) return;
  const [view, args] = parseHash(location.hash);
  const { section, show } = VIEWS[view];
  const message = notice;
  notice = null;
  const mine = ++rendering;
  for (const button of nav.querySelectorAll("a")) {
    if (button.dataset.view === section) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  try {
    await show(...args);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    if (error.status === 401 || mine !== rendering) return;
    main.replaceChildren(h("h1", { tabindex: "-1" }, "Error"), h("p", { class: "form-error", role: "alert" }, error.message));
  }
  if (mine !== rendering) return;
  if (message) main.prepend(h("p", { class: "notice", role: "status" }, message));
  main.querySelector("h1")?.focus();
}

window.addEventListener("hashchange", render);

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
  // every dialog open (a token, a credential, a plugin): a modal one would keep the
  // sign-in form inert behind it
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
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
  render();
});

signOut.addEventListener("click", () => {
  adminKey.forget();
  signedIn(false);
});

if (adminKey.get()) {
  signedIn(true);
  render();
} else {
  signedIn(false);
}
