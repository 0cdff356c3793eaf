// certkeeper dashboard. Plain JavaScript, no dependencies; served under a strict
// Content-Security-Policy, so it never uses inline styles and never writes API data as
// HTML: everything the API returns is placed with textContent.
'use strict';

(() => {
  const TOKEN_KEY = 'certkeeper.token';
  const NOTICE_KEY = 'certkeeper.notice';
  const VIEWS = ['executive', 'oncall', 'debug', 'inventory', 'audit'];
  const REFRESH_MS = 30000;
  const PAGE = 100;

  const state = {
    token: null,
    principal: null,
    view: null,
    timer: null,
    loaded: {},
    search: { name: '', status: '', cursor: null, count: 0 },
    audit: { head: 0, after: 0, last: 0 },
  };

  const $ = (id) => document.getElementById(id);

  // ---- DOM helpers -------------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'text') node.textContent = String(value);
      else if (key === 'class') node.className = value;
      else if (key === 'dataset') Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  const dash = '—';
  const text = (value) => (value === null || value === undefined || value === '' ? dash : String(value));
  const num = (value) => (typeof value === 'number' ? value.toLocaleString('en-US') : dash);

  function fmtTime(value) {
    if (!value) return dash;
    const d = new Date(value);
    if (Number.isNaN(d.getTime())) return String(value);
    return d.toISOString().slice(0, 19).replace('T', ' ') + ' UTC';
  }

  function relative(value) {
    const d = new Date(value);
    if (!value || Number.isNaN(d.getTime())) return '';
    const seconds = (d.getTime() - Date.now()) / 1000;
    const abs = Math.abs(seconds);
    const span = abs >= 86400 ? `${Math.floor(abs / 86400)} d`
      : abs >= 3600 ? `${Math.floor(abs / 3600)} h`
        : `${Math.max(1, Math.floor(abs / 60))} min`;
    return seconds >= 0 ? `in ${span}` : `${span} ago`;
  }

  function timeCell(value, withRelative) {
    const td = el('td', { class: 'time', text: fmtTime(value), title: value || undefined });
    if (withRelative && value) td.append(el('span', { class: 'muted rel', text: ` (${relative(value)})` }));
    return td;
  }

  function badge(value, kind) {
    const label = text(value);
    return el('span', { class: `badge ${kind || ''} badge-${label.replace(/[^a-zA-Z0-9-]/g, '')}`, text: label });
  }

  // A cell from a string, number or node; `num` right-aligns.
  function cell(content, cls) {
    if (content instanceof Node) {
      if (content.nodeName === 'TD') return content;
      return el('td', { class: cls }, content);
    }
    return el('td', { class: cls, text: text(content) });
  }

  // Replaces a table's body; an empty list shows one "none" row.
  function fillTable(table, rows, emptyText) {
    const body = table.tBodies[0];
    clear(body);
    if (!rows.length) {
      const columns = table.tHead ? table.tHead.rows[0].cells.length : 1;
      body.append(el('tr', { class: 'empty' }, el('td', { colspan: columns, text: emptyText || 'none' })));
    }
    for (const row of rows) body.append(row);
    table.dataset.loaded = 'true';
  }

  function row(cells, props) {
    return el('tr', props, ...cells.map((c) => cell(c)));
  }

  // ---- Banner and API ----------------------------------------------------------------

  function banner(message) {
    $('banner-text').textContent = message || '';
    show($('banner'), Boolean(message));
  }

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, method, token) {
    let response;
    try {
      response = await fetch(path, {
        method: method || 'GET',
        headers: { Authorization: `Bearer ${token || state.token}`, Accept: 'application/json' },
        cache: 'no-store',
        credentials: 'same-origin',
      });
    } catch (_) {
      throw new ApiError('cannot reach the server; check the connection and refresh', 0);
    }
    const body = await response.text().catch(() => '');
    let data = null;
    if (body) {
      try { data = JSON.parse(body); } catch (_) { data = null; }
    }
    if (!response.ok) {
      const detail = data && (data.detail || data.title);
      throw new ApiError(detail ? String(detail) : `the server answered ${response.status}`, response.status);
    }
    return data;
  }

  // Runs an API call for a view: errors go to the banner; a rejected token ends the session.
  async function guarded(work) {
    try {
      await work();
      return true;
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        signOut(`Signed out: ${error.message}`);
      } else {
        banner(error instanceof ApiError ? error.message : 'unexpected error in the dashboard');
      }
      return false;
    }
  }

  // ---- Session -----------------------------------------------------------------------

  function signOut(notice) {
    if (state.timer) clearTimeout(state.timer);
    sessionStorage.clear();
    if (notice) sessionStorage.setItem(NOTICE_KEY, notice);
    // A fresh page guarantees nothing from the previous principal stays on screen.
    location.replace(location.pathname);
  }

  function showLogin(message) {
    show($('app'), false);
    show($('session'), false);
    show($('login-panel'), true);
    const error = $('login-error');
    error.textContent = message || '';
    show(error, Boolean(message));
    $('token').focus();
  }

  async function login(event) {
    event.preventDefault();
    const token = $('token').value.trim();
    const error = $('login-error');
    show(error, false);
    if (!token) {
      error.textContent = 'Enter an API token.';
      show(error, true);
      return;
    }
    $('login').disabled = true;
    try {
      const summary = await api('/api/v1/dashboard', 'GET', token);
      sessionStorage.setItem(TOKEN_KEY, token);
      $('token').value = '';
      start(token, summary);
    } catch (e) {
      error.textContent = e instanceof ApiError ? e.message : 'sign-in failed';
      show(error, true);
    } finally {
      $('login').disabled = false;
    }
  }

  function start(token, summary) {
    state.token = token;
    state.principal = summary.principal || {};
    const role = String(state.principal.role || '');
    document.body.classList.add(`role-${role.replace(/[^a-z]/g, '')}`);
    const tenant = state.principal.tenant ? `tenant ${state.principal.tenant}` : 'all tenants';
    $('whoami').textContent = `${text(state.principal.name)} · ${text(role)} · ${tenant}`;
    // Only unscoped admins and auditors may read the audit log.
    show($('nav-audit'), canAudit());
    show($('login-panel'), false);
    show($('session'), true);
    show($('app'), true);
    renderSummary(summary);
    schedule();
    if (!location.hash) location.hash = '#executive';
    else route();
  }

  const canWrite = () => ['admin', 'issuer'].includes(state.principal && state.principal.role);
  const canAudit = () => ['admin', 'auditor'].includes(state.principal && state.principal.role)
    && !state.principal.tenant;

  // ---- Summary (executive, on-call, debug) ----------------------------------------

  function schedule() {
    if (state.timer) clearTimeout(state.timer);
    state.timer = setTimeout(async () => {
      await refreshSummary();
      schedule();
    }, REFRESH_MS);
  }

  async function refreshSummary() {
    return guarded(async () => {
      renderSummary(await api('/api/v1/dashboard'));
      banner('');
    });
  }

  function renderSummary(summary) {
    $('generated-at').textContent = summary.generated_at ? `updated ${fmtTime(summary.generated_at)}` : '';
    renderExecutive(summary.executive || {});
    renderOncall(summary.oncall || {});
    renderDebug(summary.debug || {});
  }

  function renderExecutive(x) {
    const ratio = typeof x.valid_ratio === 'number' ? x.valid_ratio : null;
    $('exec-valid-ratio').textContent = ratio === null ? dash : `${(ratio * 100).toFixed(1)}%`;
    $('exec-valid-bar').value = ratio === null ? 0 : Math.min(1, Math.max(0, ratio));
    $('exec-valid-detail').textContent = `${num(x.targets_valid)} of ${num(x.targets_total)} targets valid`;
    $('exec-active').textContent = num(x.certificates_active);
    $('exec-expiring-7d').textContent = num(x.expiring_7d);
    $('exec-incidents').textContent = num(x.incidents);
    $('exec-violations').textContent = num(x.policy_violations_7d);
    for (const [id, value] of [['exec-expiring-7d', x.expiring_7d], ['exec-incidents', x.incidents],
      ['exec-violations', x.policy_violations_7d]]) {
      $(id).parentElement.classList.toggle('tile-alert', typeof value === 'number' && value > 0);
    }
    $('view-executive').dataset.loaded = 'true';
  }

  function labelList(labels) {
    const list = el('span', { class: 'labels' });
    for (const [k, v] of Object.entries(labels || {})) list.append(el('span', { class: 'label', text: `${k}=${v}` }));
    return list;
  }

  function renderOncall(o) {
    fillTable($('oncall-alerts'), (o.alerts || []).map((a) => row([
      badge(a.severity, 'severity'), a.rule, a.summary, labelList(a.labels), timeCell(a.since, true),
      a.silenced ? 'yes' : 'no',
    ], { class: a.silenced ? 'silenced' : undefined })));
    fillTable($('oncall-renewals'), (o.renewals_in_progress || []).map((r) => row([
      r.name, r.tenant, badge(r.state), timeCell(r.next_action_at, true),
    ])));
    fillTable($('oncall-failures'), (o.failures || []).map((f) => row([
      f.name, f.tenant, cell(num(f.consecutive_failures), 'num'), el('span', { class: 'error-text', text: text(f.last_error) }),
      timeCell(f.not_after, true),
    ])));
    fillTable($('oncall-rollouts'), (o.partial_rollouts || []).map((r) => row([
      `#${text(r.id)}`, r.managed, badge(r.state), r.wave,
    ])));
    fillTable($('oncall-revocations'), (o.recent_revocations || []).map((r) => row([
      el('code', { text: text(r.serial) }), r.subject, timeCell(r.revoked_at, true), r.reason,
    ])));
    $('view-oncall').dataset.loaded = 'true';
  }

  function renderDebug(d) {
    $('debug-key-anomalies').textContent = num(d.key_anomalies);
    $('debug-key-anomalies').parentElement.classList.toggle('tile-alert', d.key_anomalies > 0);
    fillTable($('debug-latency'), (d.issuance_latency || []).map((l) => row([
      l.protocol, l.profile, cell(num(l.count), 'num'),
      cell(typeof l.mean_seconds === 'number' ? (l.mean_seconds * 1000).toFixed(1) : dash, 'num'),
    ])));
    fillTable($('debug-renewals'), (d.renewals || []).map((r) => {
      const total = (r.success || 0) + (r.failure || 0);
      const rate = total > 0 ? `${((100 * (r.success || 0)) / total).toFixed(1)}%` : dash;
      return row([r.issuer, cell(num(r.success), 'num'), cell(num(r.failure), 'num'), cell(rate, 'num')]);
    }));
    fillTable($('debug-validation'), (d.validation_failures || []).map((v) => row([
      v.challenge, cell(num(v.count), 'num'),
    ])));
    fillTable($('debug-key-use'), (d.key_use || []).map((k) => row([
      k.key, k.principal_kind, cell(num(k.uses), 'num'),
    ])));
    $('view-debug').dataset.loaded = 'true';
  }

  // ---- Routing -----------------------------------------------------------------------

  function route() {
    if (!state.token) return;
    let view = location.hash.replace(/^#/, '');
    if (!VIEWS.includes(view)) view = 'executive';
    state.view = view;
    for (const name of VIEWS) {
      show($(`view-${name}`), name === view);
      $(`nav-${name}`).classList.toggle('active', name === view);
      if (name === view) $(`nav-${name}`).setAttribute('aria-current', 'page');
      else $(`nav-${name}`).removeAttribute('aria-current');
    }
    if (!state.loaded[view]) {
      state.loaded[view] = true;
      loadView(view);
    }
  }

  function loadView(view) {
    if (view === 'inventory') {
      runSearch(false);
      loadManaged();
    } else if (view === 'audit') {
      loadAuditNewest();
    }
  }

  async function refreshAll() {
    banner('');
    const ok = await refreshSummary();
    if (ok && state.view) loadView(state.view);
    schedule();
  }

  // ---- Inventory ---------------------------------------------------------------------

  async function runSearch(more) {
    const table = $('inventory-results');
    if (!more) {
      state.search.name = $('search-name').value.trim();
      state.search.status = $('search-status').value;
      state.search.cursor = null;
      state.search.count = 0;
    }
    const params = new URLSearchParams();
    if (state.search.name) params.set('name', state.search.name);
    if (state.search.status) params.set('status', state.search.status);
    params.set('limit', String(PAGE));
    if (more && state.search.cursor) params.set('cursor', state.search.cursor);
    table.dataset.loaded = 'false';
    await guarded(async () => {
      const page = await api(`/api/v1/certificates?${params}`);
      const rows = (page.items || []).map(certRow);
      if (more) {
        for (const r of rows) table.tBodies[0].append(r);
        table.dataset.loaded = 'true';
      } else {
        fillTable(table, rows, 'no certificates match');
      }
      state.search.count += rows.length;
      state.search.cursor = page.next_cursor || null;
      $('search-count').textContent = `${state.search.count} shown${state.search.cursor ? ', more available' : ''}`;
      show($('search-more'), Boolean(state.search.cursor));
      table.dataset.query = state.search.name;
      table.dataset.status = state.search.status;
    });
  }

  function certRow(c) {
    const subject = el('div', {}, el('div', { text: text(c.common_name) }), el('div', { class: 'muted small', text: text(c.subject) }));
    const sans = el('div', { class: 'sans' });
    for (const san of (c.sans || []).slice(0, 4)) sans.append(el('div', { text: san }));
    if ((c.sans || []).length > 4) sans.append(el('div', { class: 'muted', text: `+${c.sans.length - 4} more` }));
    const short = c.serial.length > 20 ? `${c.serial.slice(0, 16)}…` : c.serial;
    const link = el('button', { type: 'button', class: 'cert-link link', dataset: { serial: c.serial }, title: c.serial, text: short });
    return row([link, subject, sans, timeCell(c.not_after, true), badge(c.status), c.source],
      { class: 'cert-row', dataset: { serial: c.serial } });
  }

  async function openCertificate(serial) {
    const panel = $('cert-detail');
    $('detail-serial').textContent = '';
    clear($('detail-fields'));
    show($('detail-pem'), false);
    show(panel, true);
    $('inventory-grid').classList.add('with-detail');
    await guarded(async () => {
      const c = await api(`/api/v1/certificates/${encodeURIComponent(serial)}`);
      const fields = $('detail-fields');
      const add = (label, value) => fields.append(el('dt', { text: label }), value instanceof Node ? el('dd', {}, value) : el('dd', { text: text(value) }));
      const sans = el('div', { class: 'sans' });
      for (const san of c.sans || []) sans.append(el('div', { text: san }));
      add('Status', badge(c.status));
      add('Subject', c.subject);
      add('Common name', c.common_name);
      add('SANs', (c.sans || []).length ? sans : dash);
      add('Issuer', c.issuer);
      add('Not before', fmtTime(c.not_before));
      add('Not after', `${fmtTime(c.not_after)} (${relative(c.not_after)})`);
      add('Key algorithm', c.key_algorithm);
      add('SHA-256 fingerprint', el('code', { class: 'wrap', text: text(c.fingerprint_sha256) }));
      add('SPKI SHA-256', el('code', { class: 'wrap', text: text(c.spki_sha256) }));
      add('Profile', c.profile);
      add('Tenant', c.tenant);
      add('Source', c.source);
      add('Requester', c.requester);
      add('Labels', Object.keys(c.labels || {}).length ? labelList(c.labels) : dash);
      add('In inventory since', fmtTime(c.created_at));
      add('Inventory id', c.id);
      if (c.revoked_at || c.revocation_reason) {
        add('Revoked at', fmtTime(c.revoked_at));
        add('Revocation reason', c.revocation_reason);
      }
      if (c.superseded_by) add('Superseded by', el('code', { text: c.superseded_by }));
      if (c.certificate_pem) {
        $('detail-pem').textContent = c.certificate_pem;
        show($('detail-pem'), true);
      }
      $('detail-serial').textContent = c.serial;
      panel.scrollIntoView({ block: 'nearest' });
    });
  }

  function closeCertificate() {
    show($('cert-detail'), false);
    $('inventory-grid').classList.remove('with-detail');
  }

  async function loadManaged() {
    const table = $('managed-table');
    table.dataset.loaded = 'false';
    await guarded(async () => {
      const items = await api('/api/v1/managed-certificates');
      fillTable(table, (items || []).map(managedRow), 'no managed certificates');
    });
  }

  function managedRow(m) {
    const name = el('button', { type: 'button', class: 'managed-link link', dataset: { name: m.name }, text: m.name });
    const cells = [name, m.tenant, badge(m.state), el('code', { text: text(m.current_serial) }),
      timeCell(m.not_after, true), cell(num(m.consecutive_failures), 'num'),
      el('span', { title: m.next_action_reason || undefined, text: `${fmtTime(m.next_action_at)} ${m.next_action_reason ? `· ${m.next_action_reason}` : ''}` })];
    // Write controls exist only for roles that may use them; auditors never get one.
    if (canWrite()) {
      cells.push(el('button', { type: 'button', class: 'renew-button secondary', dataset: { name: m.name }, text: 'Renew now' }));
    }
    return row(cells, { class: 'managed-row', dataset: { name: m.name } });
  }

  async function renew(button) {
    if (!canWrite()) return;
    const name = button.dataset.name;
    const status = $('managed-status');
    button.disabled = true;
    try {
      await api(`/api/v1/managed-certificates/${encodeURIComponent(name)}/renew`, 'POST');
      status.textContent = `Renewal of ${name} scheduled; the reconciler picks it up shortly.`;
      status.className = 'notice ok';
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        signOut(`Signed out: ${error.message}`);
        return;
      }
      status.textContent = `Renewal of ${name} was not scheduled: ${error instanceof ApiError ? error.message : 'unexpected error'}`;
      status.className = 'notice bad';
    } finally {
      button.disabled = false;
    }
    show(status, true);
  }

  async function openManaged(name) {
    const panel = $('managed-detail');
    $('managed-detail-name').textContent = name;
    await guarded(async () => {
      const m = await api(`/api/v1/managed-certificates/${encodeURIComponent(name)}`);
      fillTable($('managed-targets'), (m.targets || []).map((t) => row([
        t.kind, t.location, el('code', { text: text(t.deployed_serial) }), t.probed ? 'yes' : 'no',
        el('span', { class: 'error-text', text: text(t.error) }),
      ])));
      fillTable($('managed-attempts'), (m.attempts || []).map((a) => row([
        timeCell(a.started_at), cell(num(a.duration_ms), 'num'), a.issuer, badge(a.outcome),
        el('code', { text: text(a.serial) }), el('span', { class: 'error-text', text: text(a.error) }),
      ])));
      show(panel, true);
      panel.scrollIntoView({ block: 'nearest' });
    });
  }

  // ---- Audit -------------------------------------------------------------------------
  // GET /api/v1/audit returns entries with seq > after, ascending. To show the newest page
  // first, find the last seq by probing with limit=1 (doubling, then bisecting), then read
  // the page that ends there. Pages are shown newest first.

  async function auditHas(after) {
    const entries = await api(`/api/v1/audit?after=${after}&limit=1`);
    return Array.isArray(entries) && entries.length > 0;
  }

  async function auditHead() {
    // Invariant: an entry after `low` exists; `high` (once found) has none after it.
    let low = 0;
    const known = state.audit.head;
    if (known > 0 && (await auditHas(known - 1))) low = known - 1;
    else if (!(await auditHas(0))) return 0;
    let high = Math.max(low * 2, 64);
    while (await auditHas(high)) {
      low = high;
      high *= 2;
    }
    while (high - low > 1) {
      const mid = Math.floor((low + high) / 2);
      if (await auditHas(mid)) low = mid;
      else high = mid;
    }
    return high; // some entry has seq > high - 1 and none has seq > high
  }

  async function loadAuditNewest() {
    if (!canAudit()) {
      fillTable($('audit-table'), [], 'the audit log needs an admin or auditor token without a tenant');
      return;
    }
    await guarded(async () => {
      state.audit.head = await auditHead();
      await showAuditPage(Math.max(0, state.audit.head - PAGE));
    });
  }

  // The page of up to `limit` entries after `after` (the older page stops where the shown one starts).
  async function loadAuditPage(after, limit) {
    await guarded(() => showAuditPage(Math.max(0, after), limit));
  }

  async function showAuditPage(after, limit) {
    const size = Math.max(1, Math.min(PAGE, limit || PAGE));
    const entries = (await api(`/api/v1/audit?after=${after}&limit=${size}`)) || [];
    state.audit.after = after;
    const last = entries.length ? entries[entries.length - 1].seq : after;
    state.audit.last = last;
    if (last > state.audit.head) state.audit.head = last;
    const rows = entries.slice().reverse().map((e) => row([
      cell(num(e.seq), 'num'), timeCell(e.time), e.actor, e.action, e.object,
      badge(e.outcome, 'outcome'), el('code', { class: 'json', text: compactJson(e.detail) }),
    ], { class: `audit-row outcome-${String(e.outcome).replace(/[^a-z]/g, '')}` }));
    fillTable($('audit-table'), rows, 'no audit entries');
    $('audit-range').textContent = entries.length
      ? `entries ${entries[0].seq}–${last} of ${state.audit.head}` : 'no entries';
    $('audit-older').disabled = after <= 0;
    $('audit-newer').disabled = last >= state.audit.head;
  }

  function compactJson(value) {
    if (value === null || value === undefined) return '';
    try { return JSON.stringify(value); } catch (_) { return String(value); }
  }

  // ---- Wiring ------------------------------------------------------------------------

  function wire() {
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', () => signOut(null));
    $('refresh').addEventListener('click', refreshAll);
    $('banner-close').addEventListener('click', () => banner(''));
    window.addEventListener('hashchange', route);
    $('search-form').addEventListener('submit', (event) => {
      event.preventDefault();
      runSearch(false);
    });
    $('search-more').addEventListener('click', () => runSearch(true));
    $('inventory-results').tBodies[0].addEventListener('click', (event) => {
      const target = event.target instanceof Element ? event.target.closest('.cert-row') : null;
      if (target && target.dataset.serial) openCertificate(target.dataset.serial);
    });
    $('detail-close').addEventListener('click', closeCertificate);
    $('managed-table').tBodies[0].addEventListener('click', (event) => {
      if (!(event.target instanceof Element)) return;
      const renewButton = event.target.closest('.renew-button');
      if (renewButton) {
        renew(renewButton);
        return;
      }
      const link = event.target.closest('.managed-link');
      if (link) openManaged(link.dataset.name);
    });
    $('managed-detail-close').addEventListener('click', () => show($('managed-detail'), false));
    $('audit-newest').addEventListener('click', loadAuditNewest);
    $('audit-older').addEventListener('click', () => {
      const after = Math.max(0, state.audit.after - PAGE);
      loadAuditPage(after, state.audit.after - after);
    });
    $('audit-newer').addEventListener('click', () => loadAuditPage(
      Math.min(state.audit.last, Math.max(0, state.audit.head - PAGE)),
    ));
  }

  async function boot() {
    wire();
    const notice = sessionStorage.getItem(NOTICE_KEY);
    sessionStorage.removeItem(NOTICE_KEY);
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) {
      showLogin(notice);
      return;
    }
    try {
      start(token, await api('/api/v1/dashboard', 'GET', token));
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        sessionStorage.clear();
        showLogin(`Signed out: ${error.message}`);
      } else {
        showLogin(null);
        banner(error instanceof ApiError ? error.message : 'unexpected error in the dashboard');
      }
    }
  }

  boot();
})();
