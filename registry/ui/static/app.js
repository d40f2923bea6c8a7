// pyreg web UI: a hash-routed single page over the JSON API beside it (../api/*).
// Plain ES module, no build step: every page asks one endpoint for everything it shows.

const main = document.getElementById("main");
const whoNav = document.getElementById("who");
const toast = document.getElementById("toast");
const api = (p) => new URL("api/" + p, document.baseURI).toString();
let session = { user: null, csrf: "", login: false, deletes: false };

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function call(path, options = {}) {
  const res = await fetch(api(path), { credentials: "same-origin", ...options });
  let body = null;
  try { body = await res.json(); } catch { body = null; }
  if (!res.ok) {
    const err = new Error((body && body.error) || res.statusText);
    err.status = res.status;
    throw err;
  }
  return body;
}

function post(path, body) {
  return call(path, { method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": session.csrf },
    body: JSON.stringify(body || {}) });
}

function say(text) {
  toast.textContent = text;
  toast.classList.add("show");
  clearTimeout(say.t);
  say.t = setTimeout(() => toast.classList.remove("show"), 1800);
}

const units = ["B", "KB", "MB", "GB", "TB"];
function size(n) {
  if (n === null || n === undefined) return "—";
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(n < 10 ? 1 : 0) : n) + " " + units[i];
}
function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}
const short = (digest) => (digest || "").replace(/^sha256:/, "").slice(0, 12);
const route = (path, params) => "#/" + path + (params ? "?" + new URLSearchParams(params) : "");

function pullBlock(ref) {
  const host = location.host;
  const lines = [["pyreg", `pyreg pull ${host}/${ref}`], ["docker", `docker pull ${host}/${ref}`]];
  return h("div", { class: "pulls" }, lines.map(([tool, cmd]) => h("div", { class: "pull" },
    h("code", { tabindex: "0", "aria-label": `${tool} pull command` }, cmd),
    h("button", { type: "button", "data-copy": cmd, "aria-label": `Copy ${tool} pull command`,
      onclick: () => copy(cmd) }, "Copy"))));
}

async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const t = h("textarea", { class: "sr" }, text);
    document.body.append(t); t.select(); document.execCommand("copy"); t.remove();
  }
  say("Copied: " + text);
}

function pager(data, go) {
  const pages = Math.max(1, Math.ceil(data.total / data.size));
  return h("div", { class: "pager" },
    h("span", {}, `${data.total.toLocaleString()} total · page ${data.page} of ${pages}`),
    h("span", {},
      h("button", { type: "button", disabled: data.page <= 1, onclick: () => go(data.page - 1) }, "← Previous"), " ",
      h("button", { type: "button", disabled: data.page >= pages, onclick: () => go(data.page + 1) }, "Next →")));
}

function searchBox(label, value, onsearch) {
  let t;
  const input = h("input", { type: "search", class: "search", placeholder: label, "aria-label": label, value: value || "",
    oninput: () => { clearTimeout(t); t = setTimeout(() => onsearch(input.value.trim()), 250); } });
  return input;
}

function renderWho() {
  whoNav.replaceChildren();
  if (session.user) {
    whoNav.append(h("span", {}, "Signed in as ", h("strong", {}, session.user)),
      h("button", { type: "button", onclick: logout }, "Sign out"));
  } else if (session.login) {
    whoNav.append(h("a", { href: "#/login", class: "btn" }, "Sign in"));
  }
}

async function logout() {
  await post("logout");
  await loadSession();
  location.hash = "#/";
  render();
}

function setMain(title, ...nodes) {
  document.title = title ? `${title} · pyreg` : "pyreg";
  main.replaceChildren(...nodes);
}

// -- pages -------------------------------------------------------------------------------------

async function repositoriesPage(params) {
  const q = params.get("q") || "", page = Number(params.get("page") || 1);
  const go = (p, query = q) => { location.hash = route("", { q: query, page: p }); };
  let data;
  try {
    data = await call("repositories?" + new URLSearchParams({ q, page }));
  } catch (e) {
    if (e.status === 401) return loginPage(true);
    throw e;
  }
  const search = searchBox("Search repositories", q, (v) => go(1, v));
  const rows = data.items.map((r) => h("tr", {},
    h("td", { "data-label": "Repository" }, h("a", { href: route("repo", { name: r.name }) }, r.name)),
    h("td", { class: "num", "data-label": "Tags" }, r.tags.toLocaleString())));
  setMain("Repositories",
    h("div", { class: "head" }, h("div", {}, h("h1", {}, "Repositories"),
      h("div", { class: "muted" }, `${data.total.toLocaleString()} ${q ? "matching" : "you can pull"}`)), search),
    h("div", { class: "card" }, rows.length
      ? h("table", { class: "stack" }, h("thead", {}, h("tr", {}, h("th", {}, "Repository"), h("th", { class: "num" }, "Tags"))),
          h("tbody", {}, rows))
      : h("div", { class: "empty" }, q ? "No repository matches." : "No repositories yet."),
    pager(data, go)));
  if (params.has("q")) { search.focus(); search.setSelectionRange(q.length, q.length); }
}

async function repoPage(params) {
  const name = params.get("name"), q = params.get("q") || "", page = Number(params.get("page") || 1);
  const go = (p, query = q) => { location.hash = route("repo", { name, q: query, page: p }); };
  const data = await call("tags?" + new URLSearchParams({ name, q, page }));
  const search = searchBox("Search tags", q, (v) => go(1, v));
  const rows = data.items.map((t) => h("tr", {},
    h("td", { "data-label": "Tag" }, h("a", { href: route("manifest", { name, ref: t.tag }) }, t.tag),
      t.kind === "index" ? h("span", { class: "chip kind" }, "index") : null),
    h("td", { class: "mono", "data-label": "Digest", title: t.digest }, short(t.digest)),
    h("td", { "data-label": "Platforms" }, (t.platforms || []).length ? t.platforms.map((p) => h("span", { class: "chip" }, p)) : "—"),
    h("td", { class: "num", "data-label": "Size" }, size(t.size)),
    h("td", { class: "hide-sm", "data-label": "Created" }, when(t.created)),
    h("td", { "data-label": "Pushed" }, when(t.pushed)),
    h("td", { class: "num", "data-label": "" }, h("button", { type: "button", "aria-label": `Copy pull command for ${t.tag}`,
      onclick: () => copy(`docker pull ${location.host}/${name}:${t.tag}`) }, "Copy pull"))));
  setMain(name,
    h("div", { class: "crumbs" }, h("a", { href: "#/" }, "Repositories"), " / ", name),
    h("div", { class: "head" }, h("div", {}, h("h1", {}, name),
      h("div", { class: "muted" }, `${data.total.toLocaleString()} tag${data.total === 1 ? "" : "s"}`)), search),
    pullBlock(name + ":latest"),
    h("div", { class: "card", style: null }, rows.length
      ? h("table", { class: "stack" }, h("thead", {}, h("tr", {}, ["Tag", "Digest", "Platforms", "Size", "Created", "Pushed", ""]
          .map((c, i) => h("th", { class: [3, 6].includes(i) ? "num" : i === 4 ? "hide-sm" : null }, c)))), h("tbody", {}, rows))
      : h("div", { class: "empty" }, q ? "No tag matches." : "No tags."),
    pager(data, go)));
  if (params.has("q")) { search.focus(); search.setSelectionRange(q.length, q.length); }
}

function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

async function manifestPage(params) {
  const name = params.get("name"), ref = params.get("ref");
  const m = await call("manifest?" + new URLSearchParams({ name, ref }));
  const isTag = !ref.includes(":");
  const pullRef = isTag ? `${name}:${ref}` : `${name}@${ref}`;
  const sections = [];
  sections.push(h("div", { class: "card pad" }, kv([
    ["Digest", h("span", { class: "mono" }, m.digest)], ["Media type", h("span", { class: "mono" }, m.media_type)],
    ["Tags", m.tags.length ? m.tags.map((t) => h("span", { class: "chip" }, t)) : "—"],
    ["Size", m.size !== undefined ? size(m.size) + " compressed" : null],
    ["Platform", m.config && m.config.platform], ["Created", m.config && when(m.config.created)],
    ["Subject", m.subject ? h("a", { class: "mono", href: route("manifest", { name, ref: m.subject }) }, short(m.subject)) : null],
  ])));
  if (m.kind === "index") {
    sections.push(h("h2", {}, "Platforms"), h("div", { class: "card" }, h("table", { class: "stack" },
      h("thead", {}, h("tr", {}, h("th", {}, "Platform"), h("th", {}, "Digest"), h("th", { class: "num" }, "Size"))),
      h("tbody", {}, m.platforms.map((p) => h("tr", {},
        h("td", { "data-label": "Platform" }, h("a", { href: route("manifest", { name, ref: p.digest }) }, p.platform)),
        h("td", { class: "mono", "data-label": "Digest" }, short(p.digest)),
        h("td", { class: "num", "data-label": "Size" }, size(p.size))))))));
  }
  if (m.config) {
    const c = m.config;
    const labels = Object.entries(c.labels || {});
    sections.push(h("h2", {}, "Configuration"), h("div", { class: "card pad" }, kv([
      ["Entrypoint", c.entrypoint ? h("span", { class: "mono" }, JSON.stringify(c.entrypoint)) : null],
      ["Cmd", c.cmd ? h("span", { class: "mono" }, JSON.stringify(c.cmd)) : null],
      ["Working dir", c.workdir], ["User", c.user],
      ["Env", c.env.length ? h("div", { class: "mono" }, c.env.map((e) => h("div", {}, e))) : null],
      ["Labels", labels.length ? h("div", { class: "mono" }, labels.map(([k, v]) => h("div", {}, `${k}=${v}`))) : null],
    ])));
    if (c.history.length) {
      sections.push(h("h2", {}, "History"), h("div", { class: "card" }, h("table", {},
        h("thead", {}, h("tr", {}, h("th", {}, "Step"), h("th", { class: "hide-sm" }, "Created"))),
        h("tbody", {}, c.history.map((s) => h("tr", {},
          h("td", { class: "mono" }, (s.created_by || s.comment || "") + (s.empty_layer ? "  (no layer)" : "")),
          h("td", { class: "hide-sm" }, when(s.created))))))));
    }
  }
  if (m.layers) {
    sections.push(h("h2", {}, `Layers (${m.layers.length})`), h("div", { class: "card" }, h("table", { class: "stack" },
      h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "Digest"), h("th", { class: "hide-sm" }, "Media type"), h("th", { class: "num" }, "Size"))),
      h("tbody", {}, m.layers.map((l, i) => h("tr", {},
        h("td", { "data-label": "#" }, String(i + 1)),
        h("td", { class: "mono", "data-label": "Digest", title: l.digest }, short(l.digest)),
        h("td", { class: "mono hide-sm", "data-label": "Media type" }, l.media_type),
        h("td", { class: "num", "data-label": "Size" }, size(l.size))))))));
  }
  const groups = {};
  for (const r of m.referrers || []) (groups[r.artifact_type] ||= []).push(r);
  sections.push(h("h2", {}, "Referrers"), h("div", { class: "card" }, Object.keys(groups).length
    ? h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Artifact type"), h("th", {}, "Manifests"))),
        h("tbody", {}, Object.entries(groups).map(([type, list]) => h("tr", {},
          h("td", { class: "mono" }, type),
          h("td", {}, list.map((r) => h("div", {}, h("a", { class: "mono", href: route("manifest", { name, ref: r.digest }) }, short(r.digest)))))))))
    : h("div", { class: "empty" }, "No signatures, SBOMs or attestations refer to this manifest.")));
  sections.push(h("h2", {}, "Manifest"), h("div", { class: "card" }, h("pre", { tabindex: "0", "aria-label": "Manifest JSON" },
    JSON.stringify(m.manifest, null, 2))));
  const actions = [];
  if (m.can_delete && session.deletes) {
    if (isTag) actions.push(h("button", { type: "button", class: "danger", onclick: () => remove(name, { tag: ref }) }, `Delete tag ${ref}`));
    actions.push(h("button", { type: "button", class: "danger", onclick: () => remove(name, { digest: m.digest }) }, "Delete manifest"));
  }
  setMain(`${name}:${ref}`,
    h("div", { class: "crumbs" }, h("a", { href: "#/" }, "Repositories"), " / ",
      h("a", { href: route("repo", { name }) }, name), " / ", isTag ? ref : short(ref)),
    h("div", { class: "head" }, h("div", {}, h("h1", {}, isTag ? `${name}:${ref}` : `${name}@${short(ref)}`),
      h("span", { class: "chip kind" }, m.kind || "manifest")), h("div", { class: "actions" }, actions)),
    pullBlock(pullRef), ...sections);
}

async function remove(name, what) {
  const label = what.tag ? `tag ${what.tag}` : `manifest ${short(what.digest)} and every tag on it`;
  if (!confirm(`Delete ${label} from ${name}?`)) return;
  try {
    await call("delete?" + new URLSearchParams({ name, ...what }), { method: "POST", headers: { "X-CSRF-Token": session.csrf } });
    say("Deleted " + label);
    location.hash = route("repo", { name });
  } catch (e) {
    say("Delete refused: " + e.message);
  }
}

function loginPage(required) {
  if (!session.login) {
    setMain("Sign in", h("div", { class: "card pad login" }, h("h1", {}, "Not available"),
      h("p", { class: "muted" }, "You may not browse this registry anonymously.")));
    return;
  }
  const user = h("input", { type: "text", id: "username", name: "username", autocomplete: "username", required: true });
  const pass = h("input", { type: "password", id: "password", name: "password", autocomplete: "current-password", required: true });
  const err = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "card pad login", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const s = await call("login", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ username: user.value, password: pass.value }) });
      session = { ...session, ...s };
      renderWho();
      location.hash = "#/";
      render();
    } catch (e) { err.textContent = e.message; }
  } },
  h("h1", {}, "Sign in"), required ? h("p", { class: "muted" }, "Sign in to see this registry's repositories.") : null,
  h("label", { for: "username" }, "User name"), user, h("label", { for: "password" }, "Password"), pass, err,
  h("button", { type: "submit", class: "primary" }, "Sign in"));
  setMain("Sign in", form);
  user.focus();
}

async function loadSession() {
  session = await call("session");
  renderWho();
}

async function render() {
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const params = new URLSearchParams(query || "");
  try {
    if (path === "login") loginPage(false);
    else if (path === "repo") await repoPage(params);
    else if (path === "manifest") await manifestPage(params);
    else await repositoriesPage(params);
  } catch (e) {
    setMain("Not found", h("div", { class: "card pad" }, h("h1", {}, e.status === 404 ? "Not found" : "Something went wrong"),
      h("p", { class: "muted" }, e.message), h("a", { href: "#/" }, "← All repositories")));
  }
  if (!params.has("q") && document.activeElement === document.body) main.focus({ preventScroll: true });
}

window.addEventListener("hashchange", render);
loadSession().then(render);
