// Kleidia's one hand-written script: talks to the workstation agent on
// 127.0.0.1 for the signed-in page. No framework, no inline handlers (the CSP
// forbids inline script): everything hooks onto data-* attributes.
//
// The server authorises every operation and hands over a signed ticket plus
// the secrets encrypted to this agent's key; this script only carries them
// from one to the other and reports the agent's answer back. It never sees
// a PIN, PUK or management key in clear, except a PIN the person types.
(function () {
  'use strict';

  function KError(message, code, status) {
    this.message = message;
    this.code = code || 'error';
    this.status = status || 0;
  }
  KError.prototype = Object.create(Error.prototype);

  var cfg = null;

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }
  function text(el, s) { if (el) { el.textContent = s; } }

  function request(url, method, body, opts) {
    var init = { method: method, headers: {} };
    if (opts && opts.sameOrigin) { init.credentials = 'same-origin'; }
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    return fetch(url, init);
  }

  function api(method, path, body) {
    return request(path, method, body, { sameOrigin: true }).then(function (r) {
      return r.text().then(function (t) {
        var data = null;
        try { data = t ? JSON.parse(t) : null; } catch (e) { data = null; }
        if (!r.ok) {
          throw new KError((data && data.message) || ('Kleidia answered ' + r.status), data && data.error, r.status);
        }
        return data;
      });
    });
  }

  function agent(method, path, body) {
    return request(cfg.agent_url + path, method, body).then(function (r) {
      return r.text().then(function (t) {
        var data = null;
        try { data = t ? JSON.parse(t) : null; } catch (e) { data = null; }
        if (!r.ok) {
          var err = new KError((data && data.message) || ('the agent answered ' + r.status), data && data.error, r.status);
          if (data && data.retries_left !== undefined) { err.retries = data.retries_left; }
          throw err;
        }
        return data;
      });
    }, function () {
      throw new KError('The Kleidia agent is not reachable on this computer.', 'agent_unreachable');
    });
  }

  // ---------------------------------------------------------------- status

  function showAgent(state, detail) {
    var el = $('#agent-status');
    if (!el) { return; }
    el.setAttribute('data-state', state);
    var label = {
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
  function detect() {
    showAgent('checking');
    return api('GET', '/api/session/agent').then(function (c) {
      cfg = c;
      return agent('GET', '/.well-known/kleidia-agent').then(function (wk) {
        if (wk.agent_key_fingerprint === cfg.agent_key_fingerprint) {
          showAgent('running', 'key ' + wk.agent_key_fingerprint.slice(0, 16));
          return true;
        }
        var restarted = !!cfg.agent_key_fingerprint;
        return agent('GET', '/pubkey').then(function (pk) {
          return api('POST', '/api/session/' + cfg.session_id + '/register-agent', { public_key: pk.public_key_pem });
        }).then(function (res) {
          cfg.agent_key_fingerprint = res.agent_key_fingerprint;
          showAgent(restarted ? 'restarted' : 'running', 'key ' + res.agent_key_fingerprint.slice(0, 16));
          return true;
        });
      }, function (err) {
        if (err.code !== 'agent_unreachable') {
          showAgent('wrong-origin', err.message);
          return false;
        }
        // An opaque request still succeeds when something listens there: the
        // agent is running but does not accept this site's origin.
        return fetch(cfg.agent_url + '/health', { mode: 'no-cors' }).then(function () {
          showAgent('wrong-origin', 'The agent runs, but is configured for another Kleidia address.');
          return false;
        }, function () {
          showAgent('not-running');
          return false;
        });
      });
    }).catch(function (err) {
      showAgent('not-running', err.message);
      return false;
    });
  }

  function ensureAgent() {
    return detect().then(function (ok) {
      if (!ok) { throw new KError('The Kleidia agent is not available; see the agent status at the top of the page.', 'agent_unreachable'); }
    });
  }

  // ------------------------------------------------------------ operations

  // Agent errors after which the card may or may not have changed: the
  // operation stays pending on the server, to be resumed.
  var UNKNOWN_OUTCOME = { agent_unreachable: 1, yubikey_removed: 1, card_error: 1, pcsc_unavailable: 1 };

  function runOperation(serial, body) {
    return api('POST', '/api/yubikey/' + serial + '/operations', body).then(function (op) {
      return agent('POST', op.agent_path, op.request).then(function (res) {
        return api('POST', '/api/yubikey/' + serial + '/operations/' + op.operation_id + '/result', { success: true })
          .then(function () { return { op: op, res: res }; });
      }, function (err) {
        if (UNKNOWN_OUTCOME[err.code]) { throw err; }
        return api('POST', '/api/yubikey/' + serial + '/operations/' + op.operation_id + '/result', {
          success: false, error: err.code, message: String(err.message).slice(0, 300)
        }).then(function () { throw err; }, function () { throw err; });
      });
    });
  }

  // Send an unconfirmed secret change again (new ticket, same new value).
  function resume(serial, opId) {
    return api('GET', '/api/yubikey/' + serial + '/secrets?operation_id=' + encodeURIComponent(opId)).then(function (op) {
      return agent('POST', op.agent_path, op.request).then(function () {
        return api('POST', '/api/yubikey/' + serial + '/operations/' + opId + '/result', { success: true });
      }, function (err) {
        if (UNKNOWN_OUTCOME[err.code]) { throw err; }
        return api('POST', '/api/yubikey/' + serial + '/operations/' + opId + '/result', {
          success: false, error: err.code, message: String(err.message).slice(0, 300)
        }).then(function () { throw err; }, function () { throw err; });
      });
    });
  }

  function describe(err) {
    var m = err && err.message ? err.message : String(err);
    if (err && err.retries !== undefined) { m += ' (' + err.retries + ' tries left)'; }
    return m;
  }

  // ------------------------------------------------------------ progress UI

  function Progress(list) {
    this.list = list;
  }
  Progress.prototype.step = function (id, label) {
    var li = $('[data-step="' + id + '"]', this.list);
    if (!li) {
      li = document.createElement('li');
      li.setAttribute('data-step', id);
      this.list.appendChild(li);
    }
    li.className = 'running';
    li.textContent = label + '…';
    var self = this;
    return {
      done: function (detail) { li.className = 'done'; li.textContent = '✓ ' + label + (detail ? ': ' + detail : ''); return self; },
      skip: function (detail) { li.className = 'skipped'; li.textContent = '– ' + label + (detail ? ': ' + detail : ''); return self; },
      // Only a step still running can fail; a finished one keeps its tick.
      fail: function (detail) {
        if (li.className === 'running') { li.className = 'failed'; li.textContent = '✗ ' + label + ': ' + detail; }
        return self;
      }
    };
  };

  function flash(el, kind, message) {
    if (!el) { return; }
    el.hidden = false;
    el.className = 'flash ' + kind;
    el.textContent = message;
  }

  // ------------------------------------------------------------ enrollment

  function device(serial) {
    return api('GET', '/api/devices/' + serial).catch(function (err) {
      if (err.status === 404) { return null; }
      throw err;
    });
  }

  // Settle an unconfirmed secret change by what the card's metadata says:
  // a credential that is no longer the factory value was changed.
  function settlePending(serial, dev, defaults) {
    var kinds = { set_pin: 'pin', set_puk: 'puk', rotate_management_key: 'management_key' };
    var pending = (dev.operations || []).filter(function (o) { return o.state === 'pending' && kinds[o.kind] && o.secrets_version_new; });
    return pending.reduce(function (p, o) {
      var isDefault = defaults[kinds[o.kind]];
      if (isDefault === null || isDefault === undefined) { return p; }
      return p.then(function () {
        return api('POST', '/api/yubikey/' + serial + '/operations/' + o.id + '/result', isDefault
          ? { success: false, error: 'not_applied', message: 'resumed: the card still has the factory value' }
          : { success: true });
      });
    }, Promise.resolve());
  }

  function enroll(serial, pin, list) {
    var pr = new Progress(list);
    var dev, yk, defaults, plan;
    var s = pr.step('detect', 'Detect the YubiKey');
    return ensureAgent().then(function () {
      return agent('GET', '/discover');
    }).then(function (d) {
      yk = (d.yubikeys || []).filter(function (k) { return String(k.serial) === String(serial); })[0];
      if (!yk) { throw new KError('YubiKey ' + serial + ' is not plugged into this computer.', 'yubikey_not_found'); }
      s.done('serial ' + yk.serial + ', firmware ' + yk.firmware);
      s = pr.step('register', 'Register it to its owner');
      return device(serial);
    }).then(function (d) {
      if (d) { s.skip('already registered (' + d.device.state + ')'); return d; }
      return api('POST', '/api/devices', { serial: Number(serial), firmware: yk.firmware, form_factor: yk.form_factor || null })
        .then(function () { s.done(); return device(serial); });
    }).then(function (d) {
      dev = d;
      if (dev.device.state === 'active') { throw new KError('This YubiKey is already enrolled.', 'already_enrolled'); }
      if (dev.device.state !== 'registered') { throw new KError('This YubiKey is ' + dev.device.state + ' and cannot be enrolled.', 'bad_state'); }
      return agent('GET', '/piv/check-defaults?serial=' + serial);
    }).then(function (cd) {
      defaults = cd.defaults;
      return settlePending(serial, dev, defaults);
    }).then(function () {
      return Promise.all([api('GET', '/api/policy/enrollment'), device(serial)]);
    }).then(function (both) {
      plan = both[0];
      dev = both[1];
      s = pr.step('pin', 'Escrow and set your PIN');
      // Credentials are changed in this order; one that is no longer the
      // factory value was set by an earlier, interrupted run.
      if (defaults.pin === false) {
        if (!dev.device.secrets_version) {
          throw new KError('The PIN is no longer the factory PIN, but Kleidia has no escrowed value for it. Roll the key back (reset) before enrolling it.', 'not_factory');
        }
        s.skip('already set by the earlier run: use the PIN you chose then');
        return null;
      }
      return runOperation(serial, { operation: 'set_pin', new_pin: pin }).then(function () { s.done(); });
    }).then(function () {
      s = pr.step('puk', 'Escrow and set a new PUK');
      if (defaults.puk === false) { s.skip('already set'); return null; }
      return runOperation(serial, { operation: 'set_puk' }).then(function () { s.done(); });
    }).then(function () {
      s = pr.step('mgmt', 'Escrow and set a new management key');
      if (defaults.management_key === false) { s.skip('already set'); return null; }
      return runOperation(serial, { operation: 'rotate_management_key' }).then(function () { s.done(); });
    }).then(function () {
      return device(serial);
    }).then(function (d) {
      dev = d;
      return plan.slots.reduce(function (p, spec) {
        return p.then(function () { return certifySlot(serial, dev, spec, pr); });
      }, Promise.resolve());
    }).then(function () {
      var fin = pr.step('active', 'Device active');
      return device(serial).then(function (d) {
        if (d.device.state !== 'active') { throw new KError('The device did not become active.', 'not_active'); }
        fin.done();
        return d;
      });
    }).catch(function (err) {
      if (s) { s.fail(describe(err)); }
      throw err;
    });
  }

  // Generate the key in a slot, have it attested and signed, import the certificate.
  function certifySlot(serial, dev, spec, pr) {
    var existing = (dev.certificates || []).filter(function (c) { return c.slot === spec.slot && c.status === 'issued'; })[0];
    var s;
    var certId;
    var start;
    if (existing) {
      s = pr.step('key-' + spec.slot, 'Key in slot ' + spec.slot);
      s.skip('certificate already issued');
      certId = existing.id;
      start = Promise.resolve();
    } else {
      s = pr.step('key-' + spec.slot, 'Generate a ' + spec.algorithm + ' key in slot ' + spec.slot + ' with attestation');
      start = runOperation(serial, {
        operation: 'generate_csr', slot: spec.slot, algorithm: spec.algorithm,
        pin_policy: spec.pin_policy, touch_policy: spec.touch_policy
      }).then(function (r) {
        s.done();
        s = pr.step('cert-' + spec.slot, 'Verify the attestation and sign the certificate');
        return api('POST', '/api/yubikey/' + serial + '/sign-csr', {
          operation_id: r.op.operation_id, csr_pem: r.res.csr_pem, attestation_chain_pem: r.res.attestation_chain_pem
        });
      }).then(function (c) {
        certId = c.certificate_id;
        s.done(c.subject + ', serial ' + c.serial_number);
      });
    }
    return start.then(function () {
      s = pr.step('import-' + spec.slot, 'Import the certificate into slot ' + spec.slot);
      return runOperation(serial, { operation: 'import_certificate', certificate_id: certId });
    }).then(function () { s.done(); }, function (err) { s.fail(describe(err)); throw err; });
  }

  // ----------------------------------------------------------- page wiring

  function bindEnroll() {
    var form = $('#enroll-form');
    if (!form) { return; }
    var out = $('#enroll-result');
    var list = $('#enroll-steps');
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      var serial = form.elements.serial.value.trim();
      var pin = form.elements.pin.value;
      if (pin !== form.elements.pin_confirm.value) { flash(out, 'error', 'The two PINs differ.'); return; }
      out.hidden = true;
      list.innerHTML = '';
      var button = $('button[type=submit]', form);
      button.disabled = true;
      enroll(serial, pin, list).then(function () {
        flash(out, 'ok', 'YubiKey ' + serial + ' is enrolled and active.');
        var link = document.createElement('a');
        link.href = '/devices/' + serial;
        link.textContent = ' Open its page.';
        out.appendChild(link);
      }, function (err) {
        flash(out, 'error', describe(err) + ' Nothing is lost: run the enrollment again to resume where it stopped, or open the device page.');
        // The agent went away mid-way: the status bar says so, not "running".
        if (err.code === 'agent_unreachable') { detect(); }
      }).then(function () { button.disabled = false; form.elements.pin.value = ''; form.elements.pin_confirm.value = ''; });
    });
    // Pre-fill the serial from the first YubiKey the agent sees.
    document.addEventListener('kleidia:agent', function (e) {
      if ((e.detail.state === 'running' || e.detail.state === 'restarted') && !form.elements.serial.value) {
        agent('GET', '/discover').then(function (d) {
          var list2 = $('#enroll-detected');
          (d.yubikeys || []).forEach(function (k) {
            if (!form.elements.serial.value) { form.elements.serial.value = k.serial; }
            if (list2) {
              var li = document.createElement('li');
              li.textContent = 'YubiKey ' + k.serial + ' (firmware ' + k.firmware + ') in ' + k.reader;
              list2.appendChild(li);
            }
          });
        }).catch(function () { /* shown by the status */ });
      }
    });
  }

  function bindActions() {
    $all('form[data-action]').forEach(function (form) {
      form.addEventListener('submit', function (ev) {
        ev.preventDefault();
        var action = form.getAttribute('data-action');
        var serial = form.getAttribute('data-serial');
        var out = $('#action-result');
        if (form.hasAttribute('data-confirm') && !window.confirm(form.getAttribute('data-confirm'))) { return; }
        var button = $('button', form);
        if (button) { button.disabled = true; }
        flash(out, 'info', 'Working…');
        ensureAgent().then(function () {
          return perform(action, serial, form);
        }).then(function (msg) {
          flash(out, 'ok', msg);
          if (action !== 'piv-info') { window.setTimeout(function () { window.location.reload(); }, 1200); }
        }, function (err) {
          flash(out, 'error', describe(err));
          if (err.code === 'agent_unreachable') { detect(); }
        }).then(function () { if (button) { button.disabled = false; } });
      });
    });
  }

  function newPin(form) {
    var f = form.elements.new_pin;
    if (!f || !f.value) { return undefined; }
    if (form.elements.new_pin_confirm && form.elements.new_pin_confirm.value !== f.value) {
      throw new KError('The two PINs differ.', 'pin_mismatch');
    }
    return f.value;
  }

  function perform(action, serial, form) {
    switch (action) {
      case 'set-pin':
        return runOperation(serial, { operation: 'set_pin', new_pin: newPin(form) }).then(function () { return 'The PIN was changed and escrowed.'; });
      case 'unblock-pin':
        return runOperation(serial, { operation: 'unblock_pin', new_pin: newPin(form) }).then(function () { return 'The PIN was unblocked with the escrowed PUK.'; });
      case 'set-puk':
        return runOperation(serial, { operation: 'set_puk' }).then(function () { return 'A new PUK was set and escrowed.'; });
      case 'rotate-management-key':
        return runOperation(serial, { operation: 'rotate_management_key' }).then(function () { return 'The management key was rotated and escrowed.'; });
      case 'renew-certificate':
        return api('GET', '/api/policy/enrollment').then(function (plan) {
          var list = $('#action-steps');
          if (list) { list.innerHTML = ''; }
          var pr = new Progress(list || document.createElement('ol'));
          return plan.slots.reduce(function (p, spec) {
            return p.then(function () { return certifySlot(serial, { certificates: [] }, spec, pr); });
          }, Promise.resolve());
        }).then(function () { return 'A new key and certificate are on the YubiKey.'; });
      case 'wipe':
        // The server refuses a reset while a secret change is unconfirmed
        // (an interrupted enrollment leaves one): settle it from the card's
        // metadata first, as resuming would.
        return Promise.all([agent('GET', '/piv/check-defaults?serial=' + serial), device(serial)]).then(function (both) {
          return both[1] ? settlePending(serial, both[1], both[0].defaults) : null;
        }).then(function () {
          return runOperation(serial, { operation: 'reset' });
        }).then(function () { return 'The YubiKey was reset to factory state.'; });
      case 'settle-applied':
      case 'settle-not-applied':
        return api('POST', '/api/yubikey/' + serial + '/operations/' + form.getAttribute('data-operation') + '/result',
          action === 'settle-applied'
            ? { success: true }
            : { success: false, error: 'not_applied', message: 'settled by hand: not applied' })
          .then(function () { return 'Recorded.'; });
      case 'retry':
        return resume(serial, form.getAttribute('data-operation')).then(function () { return 'The change was applied and confirmed.'; });
      case 'piv-info':
        return agent('GET', '/piv/info?serial=' + serial).then(function (info) {
          var pre = $('#piv-info');
          if (pre) { pre.hidden = false; pre.textContent = JSON.stringify(info, null, 2); }
          return 'PIN tries left: ' + info.pin_retries + '; PUK tries left: ' + info.puk_retries + '.';
        });
      default:
        return Promise.reject(new KError('unknown action ' + action, 'bad_action'));
    }
  }

  // An admin's workstation: offer to wipe a lost or revoked key that is plugged in.
  function offerWipes() {
    if (!cfg || cfg.role !== 'admin') { return; }
    var box = $('#wipe-offers');
    if (!box) { return; }
    agent('GET', '/discover').then(function (d) {
      (d.yubikeys || []).forEach(function (k) {
        device(k.serial).then(function (dev) {
          if (!dev || ['lost', 'revoked'].indexOf(dev.device.state) < 0) { return; }
          var p = document.createElement('p');
          p.className = 'flash error';
          p.setAttribute('data-wipe-offer', k.serial);
          p.textContent = 'YubiKey ' + k.serial + ' is ' + dev.device.state + ' and plugged into this computer. ';
          var a = document.createElement('a');
          a.href = '/devices/' + k.serial + '#wipe';
          a.textContent = 'Wipe it and return it to the pool';
          p.appendChild(a);
          box.appendChild(p);
        }).catch(function () { /* not visible to us */ });
      });
    }).catch(function () { /* agent state is shown elsewhere */ });
  }

  document.addEventListener('DOMContentLoaded', function () {
    if (!$('#agent-status')) { return; }
    bindEnroll();
    bindActions();
    detect().then(function (ok) { if (ok) { offerWipes(); } });
    var again = $('#agent-retry');
    if (again) { again.addEventListener('click', function () { detect(); }); }
  });

  window.Kleidia = { detect: detect, runOperation: runOperation };
})();
