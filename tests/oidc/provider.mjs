// The OpenID provider Kleidia's tests sign in against: `oidc-provider`
// (OpenID-certified) with a login form, test users and groups, and an admin
// API on the same loopback port for what the tests do to the IdP at runtime.
//
//   node provider.mjs <config.json>
//
// config.json: { "port": 0, "client": { "client_id", "client_secret",
//   "redirect_uris": [...] }, "users": [ { "username", "password", "name",
//   "email", "groups": [...] } ] }
// Prints `READY <issuer>` on stdout once it listens (port 0 = ephemeral).
//
// Admin API (POST, JSON, loopback only; never part of a real IdP):
//   /admin/users             { username, password, name, email, groups } add or replace
//   /admin/disable           { username }  the account is disabled: no sign-in, no refresh
//   /admin/remove            { username }  the account is gone
//   /admin/redirect-uris     { redirect_uris: [...] } the client's redirect URIs
//   /admin/rotate            new signing key (the old one stays published, as in a
//                            real rotation); tokens are signed with the new one
//   /admin/next-token        { tamper: true } the next token response's id_token gets a
//                            broken signature; { expired: true } it is issued two hours
//                            in the past (already expired)
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const users = new Map();
for (const u of config.users ?? []) users.set(u.username, { ...u, disabled: false });

function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), use: 'sig', alg: 'RS256' };
}
const keys = [newKey()];
const cookieKeys = [randomUUID(), randomUUID()];
const nextToken = { tamper: false, expired: false };

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function account(username) {
  const u = users.get(username);
  if (!u || u.disabled) return undefined;
  return {
    accountId: username,
    async claims() {
      return {
        sub: username,
        name: u.name ?? username,
        preferred_username: username,
        email: u.email,
        email_verified: Boolean(u.email),
        groups: u.groups ?? [],
      };
    },
  };
}

let issuer;
let provider;

function makeProvider() {
  const p = new Provider(issuer, {
    clients: [{
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      ...config.client,
    }],
    jwks: { keys },
    cookies: { keys: cookieKeys },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    // Claims of the requested scopes go into the id_token (Kleidia reads the
    // groups from it), not only to the userinfo endpoint.
    conformIdTokenClaims: false,
    features: { devInteractions: { enabled: false } },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    findAccount: async (ctx, sub) => account(sub),
    // Kleidia is a first-party client: no consent screen.
    loadExistingGrant: async (ctx) => {
      const grantId = ctx.oidc.result?.consent?.grantId
        || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope('openid email profile groups');
      await grant.save();
      return grant;
    },
    // The client re-checks the account with its refresh token.
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    ttl: { IdToken: 3600, AccessToken: 3600, RefreshToken: 86400, Session: 86400, Grant: 86400 },
  });
  p.on('server_error', (ctx, err) => console.error('provider error', err));
  return p;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    let s = '';
    req.on('data', (c) => { s += c; if (s.length > 65536) req.destroy(); });
    req.on('end', () => resolve(s));
    req.on('error', reject);
  });
}

function send(res, status, body, type = 'application/json') {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(typeof body === 'string' ? body : JSON.stringify(body));
}

function loginPage(uid, error) {
  return `<!doctype html><html><head><title>Test IdP sign-in</title></head><body>
<h1>Test identity provider</h1>
${error ? `<p id="error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login">
<label>Username <input id="login" name="login" autofocus></label>
<label>Password <input id="password" name="password" type="password"></label>
<button id="submit" type="submit">Sign in</button>
</form></body></html>`;
}

async function interaction(req, res, url) {
  const details = await provider.interactionDetails(req, res);
  if (req.method === 'GET') {
    return send(res, 200, loginPage(details.uid), 'text/html; charset=utf-8');
  }
  if (req.method === 'POST' && url.pathname.endsWith('/login')) {
    const form = new URLSearchParams(await readBody(req));
    const u = users.get(form.get('login') ?? '');
    if (!u || u.password !== form.get('password')) {
      return send(res, 200, loginPage(details.uid, 'Wrong username or password.'), 'text/html; charset=utf-8');
    }
    if (u.disabled) {
      return send(res, 200, loginPage(details.uid, 'This account is disabled.'), 'text/html; charset=utf-8');
    }
    return provider.interactionFinished(req, res, { login: { accountId: u.username } }, { mergeWithLastSubmission: false });
  }
  return send(res, 405, { error: 'method not allowed' });
}

async function admin(req, res, url) {
  if (req.method !== 'POST') return send(res, 405, { error: 'POST only' });
  const body = JSON.parse((await readBody(req)) || '{}');
  switch (url.pathname) {
    case '/admin/users':
      users.set(body.username, { ...body, disabled: false });
      return send(res, 200, { ok: true });
    case '/admin/disable':
    case '/admin/remove': {
      if (!users.has(body.username)) return send(res, 404, { error: 'no such user' });
      if (url.pathname === '/admin/disable') users.get(body.username).disabled = true;
      else users.delete(body.username);
      return send(res, 200, { ok: true });
    }
    case '/admin/redirect-uris':
      config.client.redirect_uris = body.redirect_uris;
      provider = makeProvider();
      return send(res, 200, { ok: true });
    case '/admin/rotate':
      keys.unshift(newKey());
      provider = makeProvider();
      return send(res, 200, { kid: keys[0].kid, published: keys.map((k) => k.kid) });
    case '/admin/next-token':
      nextToken.tamper = Boolean(body.tamper);
      nextToken.expired = Boolean(body.expired);
      return send(res, 200, { ok: true });
    default:
      return send(res, 404, { error: 'no such admin call' });
  }
}

// The token endpoint's answer, broken on request (see /admin/next-token).
function tokenHooks(req, res) {
  if (nextToken.expired) {
    nextToken.expired = false;
    const realNow = Date.now;
    Date.now = () => realNow() - 2 * 3600 * 1000;
    res.on('finish', () => { Date.now = realNow; });
  }
  if (nextToken.tamper) {
    nextToken.tamper = false;
    const chunks = [];
    const write = res.write.bind(res);
    const end = res.end.bind(res);
    res.write = (c) => { chunks.push(Buffer.from(c)); return true; };
    res.end = (c, ...rest) => {
      if (c && typeof c !== 'function') chunks.push(Buffer.from(c));
      let body = Buffer.concat(chunks).toString('utf8');
      const m = body.match(/"id_token":"([^".]+)\.([^".]+)\.([^"]+)"/);
      if (m) {
        // Flip one character of the signature: same length, wrong signature.
        const sig = m[3];
        const flipped = (sig[0] === 'A' ? 'B' : 'A') + sig.slice(1);
        body = body.replace(m[0], `"id_token":"${m[1]}.${m[2]}.${flipped}"`);
      }
      write(body);
      return end();
    };
  }
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, issuer);
  const fail = (err) => {
    console.error(err);
    if (!res.headersSent) send(res, 500, { error: String(err.message ?? err) });
  };
  if (url.pathname.startsWith('/interaction/')) return interaction(req, res, url).catch(fail);
  if (url.pathname.startsWith('/admin/')) return admin(req, res, url).catch(fail);
  if (url.pathname === '/token') tokenHooks(req, res);
  return provider.callback()(req, res);
});

server.listen(config.port ?? 0, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  provider = makeProvider();
  console.log(`READY ${issuer}`);
});
