// gridwhistle console web app: vanilla JS, no build step. The server checks every read and action;
// this file only decides what to draw. Live updates come from /api/v1/stream (Server-Sent Events).
"use strict";

const I18N = {
  zh: {
    title: "网格吹哨 · 民警报到", signIn: "登录", userId: "用户编号", password: "密码", logout: "退出",
    demoHint: "演示用户：W0001（网格员）、P0001（社区民警）、health-D01-1（卫健）、desk-S0101-1（派出所值班）、cmd-D01-1（指挥中心）、sup-1（督查）",
    dispatcher: "调度", responder: "报到处置", worker: "网格员", supervisor: "督查",
    groupBy: "分组", district: "区", station: "派出所", department: "部门", urgency: "紧急程度", status: "状态", all: "全部",
    urgent: "紧急", general: "一般", myHandoffs: "本单位待办", raise: "一键上报", grid: "网格", description: "情况描述",
    address: "地址", submitReport: "上报", myIncidents: "我上报的事件", onTimeByUnit: "各单位按时报到率",
    timeToReport: "报到用时分布", breachesToday: "今日超时", breached: "已超时", warned: "即将超时", reported: "已报到",
    awaiting: "待报到", left: "剩余", over: "超时", timeline: "时间线", reclassify: "改判", reassign: "转派", summon: "增派部门",
    escalate: "上报指挥中心", reason: "理由", acknowledge: "报到", decline: "退回", onScene: "到达现场", resolve: "办结",
    verify: "核查通过", reject: "核查不通过", feedback: "评价", live: "● 实时", offline: "○ 重连中", escalation: "升级", duplicateOf: "疑似重复",
    responseRate: "响应率", resolutionRate: "解决率", satisfactionRate: "满意率", unit: "单位", onTimeRate: "按时报到率",
    summoned: "派单", none: "无", submitted: "已上报，编号", close: "关闭", noItems: "暂无事件", level: "级",
    onTimeReportRate: "按时报到率", due: "应报到", commandCentre: "指挥中心接办", breachesByKind: "今日超时（按时限）",
    kinds: { report: "报到", on_scene: "到场", resolution: "办结", verification: "核查" },
    statuses: { reported: "已上报", classified: "已分流", dispatched: "待报到", acknowledged: "已报到", on_scene: "处置中",
      resolved: "已办结", verified: "已核查", closed: "已关闭" },
    handoffStates: { dispatched: "待报到", acknowledged: "已报到", on_scene: "已到场", resolved: "已办结", declined: "已退回",
      reassigned: "已转派", released: "已释放" },
    categories: { neighbour_dispute: "邻里纠纷", theft: "盗窃", telecom_fraud: "电信诈骗", violence: "打架斗殴", fire: "火灾",
      medical_emergency: "急病", traffic_accident: "交通事故", missing_person: "人员走失", safety_hazard: "安全隐患",
      consultation: "咨询", mediation_request: "调解", environment: "环境卫生", civil_affairs: "民政", market_safety: "市场安全",
      noise: "噪音", other: "其他" },
    declineReasons: { not_our_jurisdiction: "非本部门职责", not_our_area: "非本辖区", no_capacity: "无力量", duplicate: "重复",
      insufficient_information: "信息不足" },
    dispositions: { resolved: "已解决", referred: "已移交", unfounded: "不属实", not_resolvable: "无法解决", duplicate: "重复" },
    satisfaction: { satisfied: "满意", basically_satisfied: "基本满意", not_satisfied: "不满意" },
  },
  en: {
    title: "Grid whistle · Police report", signIn: "Sign in", userId: "User id", password: "Password", logout: "Sign out",
    demoHint: "Demo users: W0001 (grid worker), P0001 (community officer), health-D01-1 (health), desk-S0101-1 (station desk), cmd-D01-1 (command centre), sup-1 (supervisor)",
    dispatcher: "Dispatch", responder: "Respond", worker: "Grid worker", supervisor: "Supervisor",
    groupBy: "Group by", district: "District", station: "Station", department: "Department", urgency: "Urgency", status: "Status", all: "All",
    urgent: "Urgent", general: "General", myHandoffs: "My unit's handoffs", raise: "Report an incident", grid: "Grid",
    description: "What happened", address: "Address", submitReport: "Report", myIncidents: "My reports",
    onTimeByUnit: "On-time report rate per unit", timeToReport: "Time to report", breachesToday: "Breaches today",
    breached: "Breached", warned: "Due soon", reported: "Reported", awaiting: "Awaiting report", left: "left", over: "over",
    timeline: "Timeline", reclassify: "Reclassify", reassign: "Reassign", summon: "Add department", escalate: "Escalate to command centre", reason: "Reason",
    acknowledge: "Report (报到)", decline: "Decline", onScene: "On scene", resolve: "Resolve", verify: "Verified",
    reject: "Not done", feedback: "Feedback", live: "● live", offline: "○ reconnecting", escalation: "Escalation", duplicateOf: "Probable duplicate of",
    responseRate: "Response rate", resolutionRate: "Resolution rate", satisfactionRate: "Satisfaction rate", unit: "Unit",
    onTimeRate: "On-time report rate", summoned: "Summoned", none: "none", submitted: "Reported, id", close: "Close",
    noItems: "No incidents", level: "level",
    onTimeReportRate: "On-time report rate", due: "Due", commandCentre: "Command centre took over",
    breachesByKind: "Breaches today by clock",
    kinds: { report: "Report", on_scene: "On scene", resolution: "Resolution", verification: "Verification" },
    statuses: { reported: "Reported", classified: "Classified", dispatched: "Awaiting report", acknowledged: "Reported",
      on_scene: "On scene", resolved: "Resolved", verified: "Verified", closed: "Closed" },
    handoffStates: { dispatched: "Awaiting report", acknowledged: "Reported", on_scene: "On scene", resolved: "Resolved",
      declined: "Declined", reassigned: "Reassigned", released: "Released" },
    categories: { neighbour_dispute: "Neighbour dispute", theft: "Theft", telecom_fraud: "Telecom fraud", violence: "Violence",
      fire: "Fire", medical_emergency: "Medical emergency", traffic_accident: "Traffic accident", missing_person: "Missing person",
      safety_hazard: "Safety hazard", consultation: "Consultation", mediation_request: "Mediation", environment: "Environment",
      civil_affairs: "Civil affairs", market_safety: "Market safety", noise: "Noise", other: "Other" },
    declineReasons: { not_our_jurisdiction: "Not our jurisdiction", not_our_area: "Not our area", no_capacity: "No capacity",
      duplicate: "Duplicate", insufficient_information: "Insufficient information" },
    dispositions: { resolved: "Resolved", referred: "Referred", unfounded: "Unfounded", not_resolvable: "Not resolvable", duplicate: "Duplicate" },
    satisfaction: { satisfied: "Satisfied", basically_satisfied: "Basically satisfied", not_satisfied: "Not satisfied" },
  },
};

const VIEWS_BY_ROLE = {
  dispatcher: ["dispatcher", "responder"], responder: ["responder"], grid_worker: ["worker"],
  supervisor: ["supervisor", "dispatcher"], admin: ["dispatcher", "supervisor"],
};

const state = {
  lang: localStorage.getItem("gw-lang") || "zh",
  tz: Intl.DateTimeFormat().resolvedOptions().timeZone || "Asia/Shanghai",
  user: null, ref: null, view: null, items: new Map(), seq: 0, clockSkewMs: 0, selected: null, source: null,
  drawPending: false,
};

const $ = (sel) => document.querySelector(sel);
const t = (key) => I18N[state.lang][key] ?? key;
const tt = (group, key) => (I18N[state.lang][group] || {})[key] ?? key;
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const now = () => Date.now() + state.clockSkewMs;

async function api(path, options = {}) {
  const response = await fetch(path, {
    credentials: "same-origin", ...options,
    headers: { "Content-Type": "application/json", ...(options.headers || {}) },
  });
  if (response.status === 401 && path !== "/api/v1/login") { showLogin(); throw new Error("signed out"); }
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw Object.assign(new Error(body?.detail ? JSON.stringify(body.detail) : response.statusText), { status: response.status });
  return body;
}

function formatTime(iso) {
  if (!iso) return "";
  return new Intl.DateTimeFormat(state.lang === "zh" ? "zh-CN" : "en-GB", {
    timeZone: state.tz, month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
  }).format(new Date(iso));
}

function formatLeft(ms) {
  const s = Math.round(Math.abs(ms) / 1000);
  const text = s >= 3600 ? `${Math.floor(s / 3600)}:${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`
    : `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  return ms >= 0 ? `${t("left")} ${text}` : `${t("over")} ${text}`;
}

// --- sign-in and layout ---------------------------------------------------------------------

function applyLanguage() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  $("#lang-toggle").textContent = state.lang === "zh" ? "English" : "中文";
  document.title = t("title");
  if (state.user) { fillFilters(); show(state.view); }
}

function showLogin() {
  state.user = null;
  if (state.source) state.source.close();
  document.querySelectorAll(".view").forEach((v) => { v.hidden = v.id !== "view-login"; });
  $("#tabs").innerHTML = ""; $("#who").textContent = ""; $("#logout").hidden = true; $("#live-state").textContent = "";
}

async function start() {
  try { state.user = await api("/api/v1/me"); } catch { showLogin(); return; }
  state.ref = await api("/api/v1/reference");
  $("#who").textContent = `${state.user.name || ""} (${state.user.user_id})`;
  $("#logout").hidden = false;
  drawTabs(); fillFilters();
  await reload();
  connectStream();
  show(VIEWS_BY_ROLE[state.user.role][0]);
}

function drawTabs() {
  $("#tabs").innerHTML = VIEWS_BY_ROLE[state.user.role]
    .map((v) => `<button type="button" data-view="${v}" ${v === state.view ? 'aria-current="page"' : ""}>${t(v)}</button>`).join("");
}

function show(view) {
  state.view = view;
  document.querySelectorAll(".view").forEach((v) => { v.hidden = v.id !== `view-${view}`; });
  drawTabs();
  if (view === "supervisor") loadSupervisor();
  draw();
}

function options(select, pairs, keep = true) {
  const previous = select.value;
  select.innerHTML = pairs.map(([v, label]) => `<option value="${esc(v)}">${esc(label)}</option>`).join("");
  if (keep && pairs.some(([v]) => v === previous)) select.value = previous;
}

function fillFilters() {
  const ref = state.ref;
  const all = [["", t("all")]];
  options($("#f-district"), all.concat(ref.districts.map((d) => [d.id, d.name])));
  options($("#f-station"), all.concat(ref.stations.map((s) => [s.id, s.name])));
  options($("#f-department"), all.concat(ref.departments.map((d) => [d.code, state.lang === "zh" ? d.name : d.name_en])));
  options($("#f-urgency"), all.concat([["urgent", t("urgent")], ["general", t("general")]]));
  options($("#f-status"), all.concat(Object.keys(I18N.zh.statuses).filter((s) => s !== "closed").map((s) => [s, tt("statuses", s)])));
  options($("#report-grid"), ref.grids.map((g) => [g.id, `${g.name} (${g.id})`]));
}

// --- data and the live stream ---------------------------------------------------------------

async function reload() {
  const queue = await api(`/api/v1/queue${state.user.role === "grid_worker" ? "?include_closed=true" : ""}`);
  state.seq = queue.seq;
  state.clockSkewMs = new Date(queue.server_now).getTime() - Date.now();
  state.items = new Map(queue.items.map((item) => [item.incident_id, item]));
  draw();
}

function connectStream() {
  if (state.source) state.source.close();
  // `after` only matters on the first connect; on reconnect the browser sends Last-Event-ID itself.
  const source = new EventSource(`/api/v1/stream?after=${state.seq}`);
  state.source = source;
  source.onopen = () => { $("#live-state").textContent = t("live"); };
  source.onerror = () => { $("#live-state").textContent = t("offline"); };
  source.addEventListener("change", (message) => {
    const change = JSON.parse(message.data);
    state.seq = change.seq;
    refreshIncident(change.incident_id);
  });
}

const inFlight = new Map();
async function refreshIncident(id) {
  // Coalesce a burst of changes to one incident into one fetch after the burst.
  if (inFlight.has(id)) { inFlight.set(id, true); return; }
  inFlight.set(id, false);
  try {
    do {
      inFlight.set(id, false);
      try {
        const item = await api(`/api/v1/incidents/${encodeURIComponent(id)}`);
        const keepClosed = state.user.role === "grid_worker";
        if (item.status === "closed" && !keepClosed) state.items.delete(id); else state.items.set(id, item);
        if (state.selected === id) drawDetail(item);
      } catch (error) {
        if (error.status === 404) state.items.delete(id);
      }
    } while (inFlight.get(id));
  } finally {
    inFlight.delete(id);
  }
  scheduleDraw();
}

function scheduleDraw() {
  if (state.drawPending) return;
  state.drawPending = true;
  requestAnimationFrame(() => { state.drawPending = false; draw(); });
}

// --- drawing --------------------------------------------------------------------------------

function dueOf(item) {
  const dues = item.handoffs.filter((h) => h.state === "dispatched" && h.report_due_at).map((h) => new Date(h.report_due_at).getTime());
  return dues.length ? Math.min(...dues) : null;
}

function sortByTimeLeft(items) {
  return items.sort((a, b) => {
    const da = dueOf(a), db = dueOf(b);
    if (da === null && db === null) return (b.reported_at || "").localeCompare(a.reported_at || "");
    if (da === null) return 1;
    if (db === null) return -1;
    return da - db;
  });
}

function flags(item) {
  if (item.breached) return `<span class="flag breach">▲ ${t("breached")}</span>`;
  if (item.warned) return `<span class="flag warn">△ ${t("warned")}</span>`;
  return "";
}

function countdown(due) {
  if (due === null) return `<span class="countdown stopped">√ ${t("reported")}</span>`;
  const ms = due - now();
  return `<span class="countdown ${ms < 0 ? "over" : ""}" data-due="${due}">${formatLeft(ms)}</span>`;
}

function handoffChip(h) {
  const mark = h.breached && h.state === "dispatched" ? "▲ " : h.state === "dispatched" ? "○ " : "√ ";
  const role = h.role === "escalation" ? ` · ${t("escalation")}` : "";
  return `<span class="handoff ${h.breached && h.state === "dispatched" ? "breached" : ""}" data-handoff="${esc(h.handoff_id)}" data-state="${esc(h.state)}">${mark}${esc(h.unit_name)}${role} · ${esc(tt("handoffStates", h.state))}</span>`;
}

function itemHtml(item) {
  const classes = ["item", item.urgency === "urgent" ? "urgent" : "", item.breached ? "breached" : item.warned ? "warned" : "",
    state.selected === item.incident_id ? "selected" : ""].join(" ");
  const escalated = (item.escalation_level > 0 ? `<span class="badge">↑ ${t("escalation")} ${item.escalation_level}</span>` : "")
    + (item.command_centre_at ? `<span class="badge command-centre">⇪ ${t("commandCentre")}</span>` : "")
    + (item.duplicate_of ? `<span class="badge duplicate" title="${esc(item.duplicate_of)}">≈ ${t("duplicateOf")} ${esc(item.duplicate_of.slice(0, 8))}</span>` : "");
  return `<div class="${classes}" data-incident="${esc(item.incident_id)}" data-status="${esc(item.status)}" tabindex="0">
    <div class="line"><span class="badge ${esc(item.urgency)}">${esc(t(item.urgency || ""))}</span>
      <strong>${esc(tt("categories", item.category || "other"))}</strong>
      <span>${esc(item.grid_name || item.grid_id || "")}</span>
      <span class="badge status">${esc(tt("statuses", item.status))}</span>${escalated}${flags(item)}${countdown(dueOf(item))}</div>
    <div class="desc">${esc((item.description || "").slice(0, 80))}</div>
    <div class="handoffs">${item.handoffs.map(handoffChip).join("")}</div></div>`;
}

function matchesFilters(item) {
  const f = (id) => $(id).value;
  if (f("#f-district") && item.district_id !== f("#f-district")) return false;
  if (f("#f-station") && item.station_id !== f("#f-station")) return false;
  // The same rules as the server's (services/console/domain.py: matches, group_keys), applied locally so a
  // live change redraws without refetching the queue.
  if (f("#f-department") && !item.group_keys.department.includes(f("#f-department"))) return false;
  if (f("#f-urgency") && item.urgency !== f("#f-urgency")) return false;
  if (f("#f-status") && item.status !== f("#f-status")) return false;
  return true;
}

function groupsOf(item, by) {
  return item.group_keys[by] || [];
}

function groupName(by, key) {
  const ref = state.ref;
  if (by === "department") { const d = ref.departments.find((x) => x.code === key); return d ? (state.lang === "zh" ? d.name : d.name_en) : key; }
  if (by === "district") return ref.districts.find((x) => x.id === key)?.name || key;
  return ref.stations.find((x) => x.id === key)?.name || key;
}

function drawDispatcher() {
  const by = $("#group-by").value;
  const groups = new Map();
  for (const item of sortByTimeLeft([...state.items.values()].filter(matchesFilters))) {
    for (const key of groupsOf(item, by)) {
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(item);
    }
  }
  $("#queue").innerHTML = groups.size === 0 ? `<p>${t("noItems")}</p>` : [...groups.entries()]
    .map(([key, items]) => `<section class="group" data-group="${esc(key)}"><h3>${esc(groupName(by, key))} (${items.length})</h3>${items.map(itemHtml).join("")}</section>`)
    .join("");
  // Marks for measuring (bench/console_render.py): when the queue was last drawn, and how big it was.
  window.__queueRenderedAt = performance.now();
  window.__queueRenderedItems = state.items.size;
  requestAnimationFrame(() => setTimeout(() => { window.__queuePaintedAt = performance.now(); }));
}

async function select(id) {
  state.selected = id;
  drawDetail(await api(`/api/v1/incidents/${encodeURIComponent(id)}`));
  draw();
}

function timelineText(e) {
  const d = e.detail;
  const bits = [d.unit_id, d.category && tt("categories", d.category), d.urgency && t(d.urgency), d.actor_id, d.reason_code, d.disposition, d.outcome, d.level && `L${d.level}`]
    .filter(Boolean).map(esc).join(" · ");
  return `<li data-event="${esc(e.event_type)}"><time>${formatTime(e.at)}</time> <strong>${esc(e.event_type)}</strong> ${bits}</li>`;
}

function drawDetail(item) {
  const panel = $("#detail");
  panel.hidden = false;
  const canDispatch = ["dispatcher", "admin"].includes(state.user.role);
  const open = item.handoffs.filter((h) => ["dispatched", "acknowledged", "on_scene"].includes(h.state));
  const units = state.ref.units.map((u) => [u.id, u.name]);
  panel.innerHTML = `<h2>${esc(tt("categories", item.category || "other"))} · ${esc(item.grid_name || "")} ${flags(item)}</h2>
    <p>${esc(item.description || "")}<br><small>${esc(item.address || "")} · ${formatTime(item.reported_at)} · ${esc(item.incident_id)}</small></p>
    <div class="handoffs">${item.handoffs.map(handoffChip).join("")}</div>
    ${canDispatch ? `<form class="actions" id="reclassify-form">
        <label>${t("reclassify")}<select name="category">${Object.keys(I18N.zh.categories).map((c) => `<option value="${c}" ${c === item.category ? "selected" : ""}>${esc(tt("categories", c))}</option>`).join("")}</select></label>
        <select name="urgency"><option value="urgent" ${item.urgency === "urgent" ? "selected" : ""}>${t("urgent")}</option><option value="general" ${item.urgency === "general" ? "selected" : ""}>${t("general")}</option></select>
        <input name="reason" placeholder="${t("reason")}" required><button>${t("reclassify")}</button></form>
      <form class="actions" id="summon-form">
        <label>${t("summon")}<select name="department">${state.ref.departments.filter((d) => d.code !== "command").map((d) => `<option value="${esc(d.code)}">${esc(state.lang === "zh" ? d.name : d.name_en)}</option>`).join("")}</select></label>
        <input name="reason" placeholder="${t("reason")}" required><button>${t("summon")}</button></form>
      ${open.map((h) => `<form class="actions handoff-actions" data-handoff="${esc(h.handoff_id)}">
        <span>${esc(h.unit_name)}</span>
        <select name="to_unit_id">${units.map(([v, l]) => `<option value="${esc(v)}">${esc(l)}</option>`).join("")}</select>
        <button name="reassign" value="1">${t("reassign")}</button>
        <button name="escalate" value="1" class="btn-escalate">${t("escalate")}</button></form>`).join("")}` : ""}
    ${state.user.role === "supervisor" && item.status === "resolved" ? `<div class="actions" id="supervisor-verify">
        <button class="primary btn-verify">${t("verify")}</button><input class="reject-reason" placeholder="${t("reason")}">
        <button class="btn-reject">${t("reject")}</button></div>` : ""}
    <h3>${t("timeline")}</h3><ol class="timeline">${item.timeline.map(timelineText).join("")}</ol>
    <button type="button" id="detail-close">${t("close")}</button><p class="error" id="detail-error" role="alert"></p>`;
}

function handoffCard(item, h) {
  const waiting = h.state === "dispatched";
  const due = waiting ? new Date(h.report_due_at).getTime() : null;
  const working = ["acknowledged", "on_scene"].includes(h.state);
  const reasons = Object.keys(I18N.zh.declineReasons).map((r) => `<option value="${r}">${esc(tt("declineReasons", r))}</option>`).join("");
  const dispositions = Object.keys(I18N.zh.dispositions).map((d) => `<option value="${d}">${esc(tt("dispositions", d))}</option>`).join("");
  return `<div class="handoff-card ${h.breached && waiting ? "breached" : ""}" data-handoff="${esc(h.handoff_id)}" data-state="${esc(h.state)}">
    <div class="line"><span class="badge ${esc(item.urgency)}">${esc(t(item.urgency || ""))}</span>
      <strong>${esc(tt("categories", item.category || "other"))}</strong> ${esc(item.grid_name || "")}
      <span class="badge">${esc(tt("handoffStates", h.state))}</span>${h.breached && waiting ? `<span class="flag breach">▲ ${t("breached")}</span>` : ""}
      ${countdown(due)}</div>
    <div class="desc">${esc(item.description || "")} <small>${esc(item.address || "")}</small></div>
    <div class="actions">
      ${waiting ? `<button class="primary btn-ack">${t("acknowledge")}</button>
        <select class="decline-reason">${reasons}</select><button class="btn-decline">${t("decline")}</button>` : ""}
      ${waiting || h.state === "acknowledged" ? `<button class="btn-onscene">${t("onScene")}</button>` : ""}
      ${working ? `<select class="disposition">${dispositions}</select><button class="btn-resolve">${t("resolve")}</button>` : ""}
    </div><p class="error" role="alert"></p></div>`;
}

function drawResponder() {
  $("#my-unit").textContent = state.user.unit_name || state.user.unit_id || "";
  const mine = [];
  for (const item of sortByTimeLeft([...state.items.values()])) {
    for (const h of item.handoffs) {
      if (h.unit_id === state.user.unit_id && ["dispatched", "acknowledged", "on_scene"].includes(h.state)) mine.push(handoffCard(item, h));
    }
  }
  $("#my-handoffs").innerHTML = mine.join("") || `<p>${t("noItems")}</p>`;
}

function drawWorker() {
  const sats = Object.keys(I18N.zh.satisfaction).map((s) => `<option value="${s}">${esc(tt("satisfaction", s))}</option>`).join("");
  const items = [...state.items.values()].sort((a, b) => (b.reported_at || "").localeCompare(a.reported_at || ""));
  $("#my-incidents").innerHTML = items.map((item) => `<div class="item" data-incident="${esc(item.incident_id)}" data-status="${esc(item.status)}">
      <div class="line"><strong>${esc(tt("categories", item.category || "other"))}</strong>
        <span class="badge status">${esc(tt("statuses", item.status))}</span>${flags(item)}${item.command_centre_at ? `<span class="badge command-centre">⇪ ${t("commandCentre")}</span>` : ""}<small>${formatTime(item.reported_at)}</small></div>
      <div class="desc">${esc(item.description || "")}</div>
      <div class="handoffs">${item.handoffs.map(handoffChip).join("")}</div>
      <div class="actions">${item.status === "resolved" ? `<button class="primary btn-verify">${t("verify")}</button><input class="reject-reason" placeholder="${t("reason")}"><button class="btn-reject">${t("reject")}</button>` : ""}
        ${item.status === "verified" ? `<select class="satisfaction">${sats}</select><button class="primary btn-feedback">${t("feedback")}</button>` : ""}</div>
      <p class="error" role="alert"></p></div>`).join("") || `<p>${t("noItems")}</p>`;
}

function draw() {
  if (!state.user) return;
  if (state.view === "dispatcher") drawDispatcher();
  if (state.view === "responder") drawResponder();
  if (state.view === "worker") drawWorker();
}

function tick() {
  document.querySelectorAll(".countdown[data-due]").forEach((el) => {
    const ms = Number(el.dataset.due) - now();
    el.textContent = formatLeft(ms);
    el.classList.toggle("over", ms < 0);
  });
}

// --- supervisor -----------------------------------------------------------------------------

const pct = (x) => (x === null || x === undefined ? "—" : `${(x * 100).toFixed(1)}%`);

async function loadSupervisor() {
  let body;
  try {
    body = await api(`/api/v1/supervisor?tz=${encodeURIComponent(state.tz)}`);
  } catch (e) {
    $("#rates").innerHTML = `<p class="error" role="alert">${esc(e.message)}</p>`;
    return;
  }
  // Closure's KPIs, with their working (numerator / denominator), so a rate is never a bare number.
  $("#rates").innerHTML = [["responseRate", "response"], ["resolutionRate", "resolution"], ["satisfactionRate", "satisfaction"],
    ["onTimeReportRate", "on_time_report"]]
    .map(([k, name]) => { const r = body.rates[name];
      return `<div class="rate" data-rate="${k}">${t(k)}<strong>${pct(r.rate)}</strong><small>${r.numerator} / ${r.denominator}</small></div>`; }).join("");
  $("#units-table").innerHTML = `<tr><th>${t("unit")}</th><th>${t("summoned")}</th><th>${t("due")}</th><th>${t("reported")}</th><th>${t("breached")}</th><th>${t("onTimeRate")}</th></tr>` +
    body.units.map((u) => `<tr data-unit="${esc(u.unit_id)}"><td>${esc(u.unit_name)}</td><td>${u.summoned}</td><td>${u.due}</td><td>${u.reported}</td><td>${u.breached}</td><td>${pct(u.on_time_report_rate)}</td></tr>`).join("");
  $("#breaches").innerHTML = body.breaches_today.map((b) => `<li class="breach" data-incident="${esc(b.incident_id)}" data-handoff="${esc(b.handoff_id)}" data-at="${esc(b.breached_at)}">▲ <time>${formatTime(b.breached_at)}</time> ${esc(b.unit_name)}</li>`).join("") || `<li>${t("none")}</li>`;
  $("#breach-kinds").innerHTML = Object.keys(I18N.zh.kinds).map((k) => `<span class="badge" data-kind="${k}">${esc(tt("kinds", k))} ${body.breaches_today_by_kind[k] || 0}</span>`).join(" ");
  $("#ttr-chart").innerHTML = histogram(body.time_to_report);
}

function histogram(buckets) {
  const label = (s) => (s === null ? "∞" : s >= 3600 ? `${s / 3600}h` : `${s / 60}m`);
  const max = Math.max(1, ...buckets.map((b) => b.count));
  const w = 44, h = 140;
  const bars = buckets.map((b, i) => {
    const bh = Math.round((b.count / max) * (h - 30));
    return `<g><rect data-count="${b.count}" x="${i * w + 6}" y="${h - 18 - bh}" width="${w - 12}" height="${bh}" fill="#1b5fa8"><title>${b.count}</title></rect>
      <text x="${i * w + w / 2}" y="${h - 20 - bh}" text-anchor="middle" font-size="11">${b.count}</text>
      <text x="${i * w + w / 2}" y="${h - 4}" text-anchor="middle" font-size="10">≤${label(b.to_seconds)}</text></g>`;
  }).join("");
  return `<svg id="ttr-svg" role="img" aria-label="${t("timeToReport")}" width="${buckets.length * w}" height="${h}" viewBox="0 0 ${buckets.length * w} ${h}">${bars}</svg>`;
}

// --- events ---------------------------------------------------------------------------------

async function act(button, path, body) {
  const box = button.closest("[data-handoff], [data-incident], #detail");
  const error = box?.querySelector(".error");
  button.disabled = true;
  try {
    await api(path, { method: "POST", body: JSON.stringify(body || {}) });
    if (error) error.textContent = "";
  } catch (e) {
    if (error) error.textContent = e.message;
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("click", (event) => {
  const target = event.target;
  if (target.matches("#tabs button")) { show(target.dataset.view); return; }
  if (target.id === "detail-close") { state.selected = null; $("#detail").hidden = true; draw(); return; }
  const card = target.closest(".handoff-card");
  if (card) {
    const id = encodeURIComponent(card.dataset.handoff);
    if (target.matches(".btn-ack")) act(target, `/api/v1/handoffs/${id}/acknowledge`);
    if (target.matches(".btn-decline")) act(target, `/api/v1/handoffs/${id}/decline`, { reason_code: card.querySelector(".decline-reason").value });
    if (target.matches(".btn-onscene")) act(target, `/api/v1/handoffs/${id}/on-scene`);
    if (target.matches(".btn-resolve")) act(target, `/api/v1/handoffs/${id}/resolve`, { disposition: card.querySelector(".disposition").value });
    return;
  }
  const workerItem = target.closest("#my-incidents .item");
  if (workerItem) {
    const id = encodeURIComponent(workerItem.dataset.incident);
    if (target.matches(".btn-verify")) act(target, `/api/v1/incidents/${id}/verification`, { confirmed: true });
    if (target.matches(".btn-reject")) act(target, `/api/v1/incidents/${id}/verification`, { confirmed: false, reason: workerItem.querySelector(".reject-reason").value || "未办结" });
    if (target.matches(".btn-feedback")) act(target, `/api/v1/incidents/${id}/feedback`, { satisfaction: workerItem.querySelector(".satisfaction").value });
    return;
  }
  if (target.closest("#supervisor-verify") && state.selected) {
    const id = encodeURIComponent(state.selected);
    if (target.matches(".btn-verify")) act(target, `/api/v1/incidents/${id}/verification`, { confirmed: true });
    if (target.matches(".btn-reject")) act(target, `/api/v1/incidents/${id}/verification`, { confirmed: false, reason: $("#supervisor-verify .reject-reason").value || "未办结" });
    return;
  }
  const item = target.closest("#queue .item");
  if (item) select(item.dataset.incident);
});

document.addEventListener("submit", (event) => {
  const form = event.target;
  event.preventDefault();
  if (form.id === "login-form") {
    api("/api/v1/login", { method: "POST", body: JSON.stringify({ user_id: $("#login-user").value.trim(), password: $("#login-password").value }) })
      .then(() => { $("#login-error").textContent = ""; start(); })
      .catch((e) => { $("#login-error").textContent = e.message; });
  } else if (form.id === "report-form") {
    // One key per report attempt: a retried submit of the same form never creates a second incident.
    form.dataset.key = form.dataset.key || crypto.randomUUID();
    $("#report-result").textContent = "";
    api("/api/v1/incidents", {
      method: "POST", headers: { "Idempotency-Key": form.dataset.key },
      body: JSON.stringify({ grid_id: $("#report-grid").value, description: $("#report-desc").value, address: $("#report-address").value || null }),
    }).then((r) => { $("#report-result").textContent = `${t("submitted")} ${r.incident_id}`; form.reset(); delete form.dataset.key; fillFilters(); })
      .catch((e) => { $("#report-result").textContent = e.message; });
  } else if (form.id === "reclassify-form") {
    const data = new FormData(form);
    act(form.querySelector("button"), `/api/v1/incidents/${encodeURIComponent(state.selected)}/reclassify`,
      { category: data.get("category"), urgency: data.get("urgency"), reason: data.get("reason") });
  } else if (form.id === "summon-form") {
    const data = new FormData(form);
    act(form.querySelector("button"), `/api/v1/incidents/${encodeURIComponent(state.selected)}/summon`,
      { department: data.get("department"), reason: data.get("reason") });
  } else if (form.matches(".handoff-actions")) {
    const id = encodeURIComponent(form.dataset.handoff);
    const escalate = event.submitter?.name === "escalate";
    if (escalate) act(event.submitter, `/api/v1/handoffs/${id}/escalate`, { reason: "dispatcher escalation" });
    else act(event.submitter, `/api/v1/handoffs/${id}/reassign`, { to_unit_id: new FormData(form).get("to_unit_id") });
  }
});

document.addEventListener("change", (event) => { if (event.target.closest(".filters")) draw(); });
$("#lang-toggle").addEventListener("click", () => { state.lang = state.lang === "zh" ? "en" : "zh"; localStorage.setItem("gw-lang", state.lang); applyLanguage(); });
$("#logout").addEventListener("click", () => api("/api/v1/logout", { method: "POST" }).finally(showLogin));

setInterval(tick, 1000);
applyLanguage();
start();
