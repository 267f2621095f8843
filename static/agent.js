// Kleidia's one hand-written script: talks to the workstation agent on
// 127.0.0.1 for the signed-in page. No framework, no inline handlers (the CSP
// forbids inline script): everything hooks onto data-* attributes.
//
// The server authorises every operation and hands over a signed ticket plus
// the secrets encrypted to this agent's key (after the card proved it is at
// this agent); this script only carries them from one to the other and
// reports the agent's answer back. It never sees
// a PIN, PUK or management key in clear, except a PIN the person types.
(function () {
  'use strict';

  class KError extends Error {
    constructor(message, code, status) {
      super(message);
      this.code = code || 'error';
      this.status = status || 0;
    }
  }

  let cfg = null;

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.from((root || document).querySelectorAll(sel)); }
  function text(el, s) { if (el) { el.textContent = s; } }

  function request(url, method, body, credentials) {
    const init = { method: method, headers: {} };
    if (credentials) { init.credentials = credentials; }
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    return fetch(url, init);
  }

  // Every answer, from Kleidia or from the agent, is read here: the JSON
  // body, or a KError with the body's message, code and tries left.
  async function parse(response, who) {
    const body = await response.text();
    let data = null;
    try { data = body ? JSON.parse(body) : null; } catch (e) { data = null; }
    if (!response.ok) {
      const err = new KError((data && data.message) || (who + ' answered ' + response.status), data && data.error, response.status);
      if (data && data.retries_left !== undefined) { err.retries = data.retries_left; }
      throw err;
    }
    return data;
  }

  async function api(method, path, body) {
    return parse(await request(path, method, body, 'same-origin'), 'Kleidia');
  }

  async function agent(method, path, body) {
    const url = cfg.agent_url + path;
    let response;
    try {
      response = await request(url, method, body);
    } catch (e) {
      throw new KError('The Kleidia agent is not reachable on this computer.', 'agent_unreachable');
    }
    return parse(response, 'the agent');
  }

  // ---------------------------------------------------------------- status

  function showAgent(state, detail) {
    const el = $('#agent-status');
    if (!el) { return; }
    el.setAttribute('data-state', state);
    const label = {
      running: 'Agent running',
      restarted: 'Agent restarted: its new key is registered',
      'not-running': 'Agent not running',
      'wrong-origin': 'Agent refuses this site',
      checking: 'Looking for the agent…'
    }[state] || state;
    text($('.agent-label', el), label);
    text($('.agent-detail', el), detail || '');
    $all('[data-agent-help]').forEach(function (h) {
      h.hidden = h.getAttribute('data-agent-help') !== state;
    });
    document.dispatchEvent(new CustomEvent('kleidia:agent', { detail: { state: state } }));
  }

  // Find the agent, and register its key with this session when it is new
  // (first visit, or the agent restarted and made a new key).
  async function detect() {
    showAgent('checking');
    try {
      cfg = await api('GET', '/api/session/agent');
      let wk;
      try {
        wk = await agent('GET', '/.well-known/kleidia-agent');
      } catch (err) {
        return await unavailable(err);
      }
      if (wk.agent_key_fingerprint === cfg.agent_key_fingerprint) {
        showAgent('running', 'key ' + wk.agent_key_fingerprint.slice(0, 16));
        return true;
      }
      const restarted = !!cfg.agent_key_fingerprint;
      const pk = await agent('GET', '/pubkey');
      const res = await api('POST', '/api/session/' + cfg.session_id + '/register-agent', { public_key: pk.public_key_pem });
      cfg.agent_key_fingerprint = res.agent_key_fingerprint;
      showAgent(restarted ? 'restarted' : 'running', 'key ' + res.agent_key_fingerprint.slice(0, 16));
      return true;
    } catch (err) {
      showAgent('not-running', err.message);
      return false;
    }
  }

  // The agent did not answer this page: it refuses this site, or is not running.
  async function unavailable(err) {
    if (err.code !== 'agent_unreachable') {
      showAgent('wrong-origin', err.message);
      return false;
    }
    // An opaque request still succeeds when something listens there: the
    // agent is running but does not accept this site's origin.
    try {
      await fetch(cfg.agent_url + '/health', { mode: 'no-cors' });
      showAgent('wrong-origin', 'The agent runs, but is configured for another Kleidia address.');
    } catch (e) {
      showAgent('not-running');
    }
    return false;
  }

  async function ensureAgent() {
    if (!await detect()) {
      throw new KError('The Kleidia agent is not available; see the agent status at the top of the page.', 'agent_unreachable');
    }
  }

  // ------------------------------------------------------------ operations

  // Agent errors after which the card may or may not have changed: the
  // operation stays pending on the server, to be resumed (a resume settles
  // it: the agent first finds out which value the card holds).
  const UNKNOWN_OUTCOME = new Set(['agent_unreachable', 'yubikey_removed', 'card_error', 'pcsc_unavailable', 'outcome_unknown', 'cannot_settle']);

  function report(serial, opId, outcome) {
    return api('POST', '/api/yubikey/' + serial + '/operations/' + opId + '/result', outcome);
  }

  // Hand the server's ticket to the agent and report how it went.
  async function carry(serial, opId, op) {
    let res;
    try {
      res = await agent('POST', op.agent_path, op.request);
    } catch (err) {
      if (!UNKNOWN_OUTCOME.has(err.code)) {
        // The agent's error is the one to show, even if the report fails.
        await report(serial, opId, { success: false, error: err.code, message: String(err.message).slice(0, 300) })
          .catch(function () {});
      }
      throw err;
    }
    const outcome = { success: true };
    if (res && res.settled) { outcome.settled = res.settled; }
    // A wipe says what became of the OATH accounts; the audit keeps it.
    if (res && res.oath) { outcome.oath = res.oath; }
    await report(serial, opId, outcome);
    return res;
  }

  // An operation that releases a secret first answers with a presence
  // challenge: the agent has the card sign it (with the card's presence key,
  // over this agent's key fingerprint), and only that signature gets the
  // ticket and the secrets. Any other answer passes through unchanged.
  async function presence(serial, answer, newPin) {
    if (!answer || !answer.presence_required) { return answer; }
    const proof = await agent('POST', answer.agent_path, answer.request);
    const body = { challenge_id: answer.challenge_id, proof: proof };
    if (newPin) { body.new_pin = newPin; }
    return api('POST', '/api/yubikey/' + serial + '/operations/' + answer.operation_id + '/presence', body);
  }

  async function runOperation(serial, body) {
    const first = await api('POST', '/api/yubikey/' + serial + '/operations', body);
    const op = await presence(serial, first, body.new_pin);
    return { op: op, res: await carry(serial, op.operation_id, op) };
  }

  // Send an unconfirmed secret change again (new ticket, same new value).
  async function resume(serial, opId) {
    const first = await api('POST', '/api/yubikey/' + serial + '/secrets', { operation_id: opId });
    const op = await presence(serial, first);
    await carry(serial, opId, op);
  }

  function describe(err) {
    let m = err && err.message ? err.message : String(err);
    if (err && err.retries !== undefined) { m += ' (' + err.retries + ' tries left)'; }
    return m;
  }

  // ------------------------------------------------------------ progress UI

  class Progress {
    constructor(list) { this.list = list; }

    step(id, label) {
      let li = $('[data-step="' + id + '"]', this.list);
      if (!li) {
        li = document.createElement('li');
        li.setAttribute('data-step', id);
        this.list.appendChild(li);
      }
      li.className = 'running';
      li.textContent = label + '…';
      const end = function (cls, mark, detail) {
        li.className = cls;
        li.textContent = mark + ' ' + label + (detail ? ': ' + detail : '');
      };
      return {
        done: function (detail) { end('done', '✓', detail); },
        skip: function (detail) { end('skipped', '–', detail); },
        // Only a step still running can fail; a finished one keeps its tick.
        fail: function (detail) { if (li.className === 'running') { end('failed', '✗', detail); } }
      };
    }
  }

  function flash(el, kind, message) {
    if (!el) { return; }
    el.hidden = false;
    el.className = 'flash ' + kind;
    el.textContent = message;
  }

  // ------------------------------------------------------------ enrollment

  async function device(serial) {
    try {
      return await api('GET', '/api/devices/' + serial);
    } catch (err) {
      if (err.status === 404) { return null; }
      throw err;
    }
  }

  // Settle an unconfirmed secret change by what the card's metadata says:
  // a credential that is no longer the factory value was changed.
  async function settlePending(serial, dev, defaults) {
    const kinds = { set_pin: 'pin', set_puk: 'puk', rotate_management_key: 'management_key' };
    for (const o of dev.operations || []) {
      // true or false from the metadata; null when the card cannot tell.
      const isDefault = defaults[kinds[o.kind]];
      if (o.state !== 'pending' || !o.secrets_version_new || typeof isDefault !== 'boolean') { continue; }
      await report(serial, o.id, isDefault
        ? { success: false, error: 'not_applied', message: 'resumed: the card still has the factory value' }
        : { success: true });
    }
  }

  async function enroll(serial, pin, list) {
    const pr = new Progress(list);
    let s = pr.step('detect', 'Detect the YubiKey');
    try {
      // A PIN the policy refuses stops the wizard before it registers or
      // changes anything (the same rule is enforced again when it is set).
      await api('POST', '/api/policy/pin-check', { pin: pin });
      await ensureAgent();
      const found = await agent('GET', '/discover');
      const yk = (found.yubikeys || []).find(function (k) { return String(k.serial) === String(serial); });
      if (!yk) { throw new KError('YubiKey ' + serial + ' is not plugged into this computer.', 'yubikey_not_found'); }
      s.done('serial ' + yk.serial + ', firmware ' + yk.firmware);

      s = pr.step('register', 'Register it to its owner');
      let dev = await device(serial);
      if (dev) {
        s.skip('already registered (' + dev.device.state + ')');
      } else {
        // The card shows itself: it makes its attested presence key and
        // signs the server's challenge; the server registers the serial
        // that attestation names.
        const claim = await api('POST', '/api/devices/claim', { serial: Number(serial) });
        const proof = await agent('POST', claim.agent_path, claim.request);
        await api('POST', '/api/devices', {
          serial: Number(serial), firmware: yk.firmware, form_factor: yk.form_factor || null,
          challenge_id: claim.challenge_id, proof: proof
        });
        s.done();
        dev = await device(serial);
      }
      if (dev.device.state === 'active') { throw new KError('This YubiKey is already enrolled.', 'already_enrolled'); }
      if (dev.device.state !== 'registered') { throw new KError('This YubiKey is ' + dev.device.state + ' and cannot be enrolled.', 'bad_state'); }

      const defaults = (await agent('GET', '/piv/check-defaults?serial=' + serial)).defaults;
      await settlePending(serial, dev, defaults);
      const [plan, settled] = await Promise.all([api('GET', '/api/policy/enrollment'), device(serial)]);

      // Credentials are changed in this order; one that is no longer the
      // factory value was set by an earlier, interrupted run.
      s = pr.step('pin', 'Escrow and set your PIN');
      if (defaults.pin === false) {
        if (!settled.device.secrets_version) {
          throw new KError('The PIN is no longer the factory PIN, but Kleidia has no escrowed value for it. Roll the key back (reset) before enrolling it.', 'not_factory');
        }
        s.skip('already set by the earlier run: use the PIN you chose then');
      } else {
        await runOperation(serial, { operation: 'set_pin', new_pin: pin });
        s.done();
      }
      s = pr.step('puk', 'Escrow and set a new PUK');
      if (defaults.puk === false) {
        s.skip('already set');
      } else {
        await runOperation(serial, { operation: 'set_puk' });
        s.done();
      }
      s = pr.step('mgmt', 'Escrow and set a new management key');
      if (defaults.management_key === false) {
        s.skip('already set');
      } else {
        await runOperation(serial, { operation: 'rotate_management_key' });
        s.done();
      }

      const credentialed = await device(serial);
      for (const spec of plan.slots) {
        await certifySlot(serial, credentialed, spec, pr);
      }
      const fin = pr.step('active', 'Device active');
      const active = await device(serial);
      if (active.device.state !== 'active') { throw new KError('The device did not become active.', 'not_active'); }
      fin.done();
      return active;
    } catch (err) {
      s.fail(describe(err));
      throw err;
    }
  }

  // Key algorithms and slots as people read them (the wire names are for programs).
  const ALGORITHM_NAMES = { rsa2048: 'RSA 2048', rsa3072: 'RSA 3072', rsa4096: 'RSA 4096', ecc_p256: 'ECC P-256', ecc_p384: 'ECC P-384' };
  const SLOT_NAMES = { '9a': '9a (authentication)', '9c': '9c (digital signature)', '9d': '9d (key management)', '9e': '9e (card authentication)' };
  function algorithmName(a) { return ALGORITHM_NAMES[a] || a; }
  function slotName(s) { return SLOT_NAMES[s] || s; }

  // Generate the key in a slot, have it attested and signed, import the certificate.
  async function certifySlot(serial, dev, spec, pr) {
    const existing = (dev.certificates || []).find(function (c) { return c.slot === spec.slot && c.status === 'issued'; });
    let s;
    try {
      let certId;
      if (existing) {
        s = pr.step('key-' + spec.slot, 'Key in slot ' + slotName(spec.slot));
        s.skip('certificate already issued');
        certId = existing.id;
      } else {
        s = pr.step('key-' + spec.slot, 'Generate an ' + algorithmName(spec.algorithm) + ' key in slot ' + slotName(spec.slot) + ' with attestation');
        const r = await runOperation(serial, {
          operation: 'generate_csr', slot: spec.slot, algorithm: spec.algorithm,
          pin_policy: spec.pin_policy, touch_policy: spec.touch_policy
        });
        s.done();
        s = pr.step('cert-' + spec.slot, 'Verify the attestation and sign the certificate');
        const c = await api('POST', '/api/yubikey/' + serial + '/sign-csr', {
          operation_id: r.op.operation_id, csr_pem: r.res.csr_pem, attestation_chain_pem: r.res.attestation_chain_pem
        });
        certId = c.certificate_id;
        s.done(c.subject + ', serial ' + c.serial_number);
      }
      s = pr.step('import-' + spec.slot, 'Import the certificate into slot ' + slotName(spec.slot));
      await runOperation(serial, { operation: 'import_certificate', certificate_id: certId });
      s.done();
    } catch (err) {
      s.fail(describe(err));
      throw err;
    }
  }

  // ----------------------------------------------------------- page wiring

  function bindEnroll() {
    const form = $('#enroll-form');
    if (!form) { return; }
    const out = $('#enroll-result');
    const list = $('#enroll-steps');
    form.addEventListener('submit', async function (ev) {
      ev.preventDefault();
      const serial = form.elements.serial.value.trim();
      const pin = form.elements.pin.value;
      if (pin !== form.elements.pin_confirm.value) { flash(out, 'error', 'The two PINs differ.'); return; }
      out.hidden = true;
      list.innerHTML = '';
      const button = $('button[type=submit]', form);
      button.disabled = true;
      try {
        await enroll(serial, pin, list);
        flash(out, 'ok', 'YubiKey ' + serial + ' is enrolled and active.');
        const link = document.createElement('a');
        link.href = '/devices/' + serial;
        link.textContent = ' Open its page.';
        out.appendChild(link);
      } catch (err) {
        flash(out, 'error', describe(err) + ' Nothing is lost: run the enrollment again to resume where it stopped, or open the device page.');
        // The agent went away mid-way: the status bar says so, not "running".
        if (err.code === 'agent_unreachable') { detect(); }
      }
      button.disabled = false;
      form.elements.pin.value = '';
      form.elements.pin_confirm.value = '';
    });
    // Pre-fill the serial from the first YubiKey the agent sees.
    document.addEventListener('kleidia:agent', async function (e) {
      if ((e.detail.state !== 'running' && e.detail.state !== 'restarted') || form.elements.serial.value) { return; }
      let found;
      try { found = await agent('GET', '/discover'); } catch (err) { return; /* shown by the status */ }
      const detected = $('#enroll-detected');
      (found.yubikeys || []).forEach(function (k) {
        if (!form.elements.serial.value) { form.elements.serial.value = k.serial; }
        if (detected) {
          const li = document.createElement('li');
          li.textContent = 'YubiKey ' + k.serial + ' (firmware ' + k.firmware + ') in ' + k.reader;
          detected.appendChild(li);
        }
      });
    });
  }

  function bindActions() {
    $all('form[data-action]').forEach(function (form) {
      form.addEventListener('submit', async function (ev) {
        ev.preventDefault();
        const action = form.getAttribute('data-action');
        const serial = form.getAttribute('data-serial');
        const out = $('#action-result');
        if (form.hasAttribute('data-confirm') && !window.confirm(form.getAttribute('data-confirm'))) { return; }
        const button = $('button', form);
        if (button) { button.disabled = true; }
        flash(out, 'info', 'Working…');
        try {
          await ensureAgent();
          flash(out, 'ok', await perform(action, serial, form));
          if (action !== 'piv-info') { window.setTimeout(function () { window.location.reload(); }, 1200); }
        } catch (err) {
          flash(out, 'error', describe(err));
          if (err.code === 'agent_unreachable') { detect(); }
        }
        if (button) { button.disabled = false; }
      });
    });
  }

  function newPin(form) {
    const f = form.elements.new_pin;
    if (!f || !f.value) { return undefined; }
    if (form.elements.new_pin_confirm && form.elements.new_pin_confirm.value !== f.value) {
      throw new KError('The two PINs differ.', 'pin_mismatch');
    }
    return f.value;
  }

  async function perform(action, serial, form) {
    switch (action) {
      case 'set-pin':
        await runOperation(serial, { operation: 'set_pin', new_pin: newPin(form) });
        return 'The PIN was changed and escrowed.';
      case 'unblock-pin':
        await runOperation(serial, { operation: 'unblock_pin', new_pin: newPin(form) });
        return 'The PIN was unblocked with the escrowed PUK.';
      case 'set-puk':
        await runOperation(serial, { operation: 'set_puk' });
        return 'A new PUK was set and escrowed.';
      case 'rotate-management-key':
        await runOperation(serial, { operation: 'rotate_management_key' });
        return 'The management key was rotated and escrowed.';
      case 'renew-certificate': {
        const plan = await api('GET', '/api/policy/enrollment');
        const list = $('#action-steps');
        if (list) { list.innerHTML = ''; }
        const pr = new Progress(list || document.createElement('ol'));
        for (const spec of plan.slots) {
          await certifySlot(serial, { certificates: [] }, spec, pr);
        }
        return 'A new key and certificate are on the YubiKey.';
      }
      case 'wipe': {
        // The server refuses a reset while a secret change is unconfirmed
        // (an interrupted enrollment leaves one): settle it from the card's
        // metadata first, as resuming would.
        const [checked, dev] = await Promise.all([agent('GET', '/piv/check-defaults?serial=' + serial), device(serial)]);
        if (dev) { await settlePending(serial, dev, checked.defaults); }
        const wiped = await runOperation(serial, { operation: 'reset' });
        if (wiped.res && wiped.res.oath === 'not_present') {
          return 'The YubiKey was reset to factory state. It has no OATH application, so it held no OATH accounts to delete. FIDO2 credentials need a reset by hand: see below.';
        }
        return 'The YubiKey was reset to factory state and its OATH accounts were deleted. FIDO2 credentials need a reset by hand: see below.';
      }
      case 'settle-applied':
      case 'settle-not-applied':
        await report(serial, form.getAttribute('data-operation'), action === 'settle-applied'
          ? { success: true }
          : { success: false, error: 'not_applied', message: 'settled by hand: not applied' });
        return 'Recorded.';
      case 'retry':
        await resume(serial, form.getAttribute('data-operation'));
        return 'The change was applied and confirmed.';
      case 'piv-info': {
        const info = await agent('GET', '/piv/info?serial=' + serial);
        const pre = $('#piv-info');
        if (pre) { pre.hidden = false; pre.textContent = JSON.stringify(info, null, 2); }
        return 'PIN tries left: ' + info.pin_retries + '; PUK tries left: ' + info.puk_retries + '.';
      }
      default:
        throw new KError('unknown action ' + action, 'bad_action');
    }
  }

  // An admin's workstation: offer to wipe a lost or revoked key that is plugged in.
  async function offerWipes() {
    if (!cfg || cfg.role !== 'admin') { return; }
    const box = $('#wipe-offers');
    if (!box) { return; }
    let found;
    try { found = await agent('GET', '/discover'); } catch (e) { return; /* agent state is shown elsewhere */ }
    (found.yubikeys || []).forEach(function (k) { offerWipe(box, k.serial); });
  }

  async function offerWipe(box, serial) {
    let dev;
    try { dev = await device(serial); } catch (e) { return; /* not visible to us */ }
    if (!dev || ['lost', 'revoked'].indexOf(dev.device.state) < 0) { return; }
    const p = document.createElement('p');
    p.className = 'flash error';
    p.setAttribute('data-wipe-offer', serial);
    p.textContent = 'YubiKey ' + serial + ' is ' + dev.device.state + ' and plugged into this computer. ';
    const a = document.createElement('a');
    a.href = '/devices/' + serial + '#wipe';
    a.textContent = 'Wipe it and return it to the pool';
    p.appendChild(a);
    box.appendChild(p);
  }

  document.addEventListener('DOMContentLoaded', async function () {
    if (!$('#agent-status')) { return; }
    bindEnroll();
    bindActions();
    const again = $('#agent-retry');
    if (again) { again.addEventListener('click', function () { detect(); }); }
    if (await detect()) { offerWipes(); }
  });

  window.Kleidia = { detect: detect, runOperation: runOperation };
})();
