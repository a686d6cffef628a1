// A real OpenID Provider (panva/oidc-provider v9) for authgate's tests and demo.
//
// Environment variables (all optional):
//   IDP_PORT     TCP port to listen on; 0 (default) picks a free port.
//   IDP_HOST     Address to bind (default 127.0.0.1).
//   IDP_ISSUER   Issuer identifier (default http://127.0.0.1:<real port>); no path part.
//   IDP_CLIENTS  JSON array of client metadata objects. Missing fields default to a
//                confidential client: client_secret_basic, grant_types
//                [authorization_code, refresh_token], response_types [code].
//                Default: one client "authgate" / "secret".
//   IDP_USERS    JSON array of {sub, email, password, name, preferred_username,
//                groups, email_verified, login}. Only email + password are required;
//                sub defaults to the email, email_verified to true, and a user
//                without a "groups" key gets no groups claim at all. `login` (default:
//                the email) is what is typed in the form's email field, for users whose
//                email is too odd to type (whitespace, look-alike characters).
//                `groups_overage: true` replaces the groups claim by Azure's group-overage
//                pointer (`_claim_names.groups` + `_claim_sources`, OIDC distributed claims).
//   IDP_TEST_CONTROL  "1" enables the test-only control endpoints below; off by default
//                (they answer 404), and without it the IdP behaves exactly as described here.
//
// Test control (only with IDP_TEST_CONTROL=1), for authgate's tests (answers are JSON):
//   POST /__test__/tamper {"mode": "<mode>"}  rewrites the id_token of every later token
//        endpoint response until set back to "off"; GET /__test__/tamper tells the mode.
//        Modes: see TAMPER_MODES (alg "none", another key, HS256 keyed with the client secret,
//        wrong iss/aud/nonce, expired, not yet valid, no id_token at all, ...). Re-signed tokens
//        use the IdP's real RS256 key, so only the named defect is wrong.
//   The user directory, read afresh on every request (login form, and findAccount/claims()
//   for ID tokens, userinfo and the refresh_token grant), so changes apply to every LATER
//   ID token, userinfo answer and refresh, also for tokens issued before the change.
//   <email> is the user's email (case-insensitive, URL-encoded), else its `login` or sub.
//   GET    /__test__/users            all user records.
//   GET    /__test__/users/<email>    the user's current record (404 if there is none).
//   POST   /__test__/users/<email> {"groups": [...], "name": "...", "email_verified": bool,
//          "preferred_username": "...", "password": "..."}  (any subset; null removes the
//          key, e.g. "groups": null = no groups claim)  changes the user; answers the record.
//          Other keys (sub, email, login) are refused with 400.
//   DELETE /__test__/users/<email>    deletes the account: findAccount no longer finds it,
//          so later refresh_token grants for it fail with invalid_grant, userinfo with its
//          access tokens with 401 invalid_token, it cannot log in, and an IdP session it
//          still has must sign in again (login prompt).
//   POST   /__test__/users {user as in IDP_USERS}  adds a user at run time (201; 409 if the
//          sub or login exists). No limit on the number of groups or claim sizes.
//
// On success it prints exactly one line "READY <issuer>" to stdout. Errors go to stderr.
// Login UI: GET /interaction/<uid> renders a form posting to /interaction/<uid>/login;
// consent is granted automatically. Logout: /session/end (RP-initiated logout).
// PKCE (S256) is required.
// Refresh tokens: a client with the refresh_token grant type that asks for offline_access in a
// code-flow GET /auth gets offline_access granted (the IdP adds prompt=consent to such a request
// itself, and consent is automatic) and a refresh token from the authorization_code grant;
// without offline_access in the granted scopes, no refresh token. With prompt=none,
// offline_access is dropped (no consent can be obtained). See offlineAccessConsent().

import * as crypto from 'node:crypto';
import * as http from 'node:http';

import Provider, { interactionPolicy } from 'oidc-provider';

const env = (name, fallback) => process.env[name] ?? fallback;
const json = (name, fallback) => {
  const raw = process.env[name];
  if (!raw) return fallback;
  try { return JSON.parse(raw); } catch (err) {
    console.error(`invalid JSON in ${name}: ${err.message}`);
    process.exit(2);
  }
};

const DEFAULT_CLIENTS = [{
  client_id: 'authgate',
  client_secret: 'secret',
  redirect_uris: ['https://authenticate.test:8443/oauth2/callback'],
  post_logout_redirect_uris: ['https://authenticate.test:8443/'],
}];
const DEFAULT_USERS = [
  { email: 'alice@example.com', password: 'alice-password', name: 'Alice Example', groups: ['admins', 'devs'] },
  { email: 'bob@evil.org', password: 'bob-password', name: 'Bob Evil', groups: ['devs'] },
  { email: 'carol@example.com', password: 'carol-password', name: 'Carol Example' },
];

const clients = json('IDP_CLIENTS', DEFAULT_CLIENTS).map((c) => ({
  token_endpoint_auth_method: 'client_secret_basic',
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  ...c,
}));
// The user directory. Everything (login form, findAccount, hence ID tokens, userinfo and the
// refresh grant) looks users up here on every request, so the test-control endpoints below
// change what the IdP answers from the next request on.
const normalizeUser = (u) => ({ sub: u.email, email_verified: true, ...u });
const userBySub = new Map();
const userByLogin = new Map();
const loginKey = (u) => String(u.login ?? u.email).toLowerCase();
function addUser(user) {
  userBySub.set(user.sub, user);
  userByLogin.set(loginKey(user), user);
}
function removeUser(user) {
  userBySub.delete(user.sub);
  userByLogin.delete(loginKey(user));
}
for (const u of json('IDP_USERS', DEFAULT_USERS)) addUser(normalizeUser(u));

// Fresh signing keys on every start: RS256 (used for ID tokens) and ES256.
function privateJwk(type, options, alg) {
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  const kid = `${alg.toLowerCase()}-${crypto.randomUUID()}`;
  return { ...privateKey.export({ format: 'jwk' }), alg, use: 'sig', kid };
}
const jwks = {
  keys: [
    privateJwk('rsa', { modulusLength: 2048 }, 'RS256'),
    privateJwk('ec', { namedCurve: 'P-256' }, 'ES256'),
  ],
};

// ---- test-only ID token tampering (IDP_TEST_CONTROL=1) ----

const TEST_CONTROL = process.env.IDP_TEST_CONTROL === '1';
const tamper = { mode: 'off' };
const attackerKey = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
const realRsaKey = crypto.createPrivateKey({ key: jwks.keys[0], format: 'jwk' });
const b64u = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
const nowS = () => Math.floor(Date.now() / 1000);

function signJwt(header, payload, key) {
  const input = `${b64u(header)}.${b64u(payload)}`;
  let signature;
  if (header.alg === 'none') signature = '';
  else if (header.alg === 'HS256') signature = crypto.createHmac('sha256', key).update(input).digest('base64url');
  else signature = crypto.sign('sha256', Buffer.from(input), key).toString('base64url');
  return `${input}.${signature}`;
}

// Each mode takes the genuine token's header and claims (and the client's secret) and returns
// the id_token to send instead, or undefined to drop the id_token from the response.
const TAMPER_MODES = {
  'alg-none': (h, p) => signJwt({ alg: 'none', typ: 'JWT' }, p),
  'alg-none-kid': (h, p) => signJwt({ ...h, alg: 'none' }, p),
  'other-key': (h, p) => signJwt(h, p, attackerKey),
  'unknown-kid': (h, p) => signJwt({ ...h, kid: 'attacker-key-1' }, p, attackerKey),
  'embedded-jwk': (h, p) => signJwt(
    { alg: 'RS256', typ: 'JWT', jwk: crypto.createPublicKey(attackerKey).export({ format: 'jwk' }) }, p, attackerKey),
  jku: (h, p) => signJwt({ alg: 'RS256', typ: 'JWT', kid: 'attacker-key-2', jku: 'http://127.0.0.1:9/jwks.json' }, p, attackerKey),
  'hs256-client-secret': (h, p, secret) => signJwt({ alg: 'HS256', typ: 'JWT', kid: h.kid }, p, secret),
  'bad-signature': (h, p) => {
    const token = signJwt(h, p, realRsaKey);
    const flip = token.at(-2) === 'A' ? 'B' : 'A';
    return `${token.slice(0, -2)}${flip}${token.at(-1)}`;
  },
  'no-signature': (h, p) => `${signJwt(h, p, realRsaKey).split('.').slice(0, 2).join('.')}.`,
  'wrong-iss': (h, p) => signJwt(h, { ...p, iss: 'https://evil.test' }, realRsaKey),
  'wrong-aud': (h, p) => signJwt(h, { ...p, aud: 'another-client' }, realRsaKey),
  'several-aud-no-azp': (h, p) => {
    const { azp, ...rest } = p;
    return signJwt(h, { ...rest, aud: [p.aud, 'another-client'] }, realRsaKey);
  },
  'wrong-nonce': (h, p) => signJwt(h, { ...p, nonce: 'nonce-of-another-login' }, realRsaKey),
  'non-ascii-nonce': (h, p) => signJwt(h, { ...p, nonce: `${p.nonce}\u00e9` }, realRsaKey),
  'no-nonce': (h, p) => {
    const { nonce, ...rest } = p;
    return signJwt(h, rest, realRsaKey);
  },
  expired: (h, p) => signJwt(h, { ...p, iat: nowS() - 7200, exp: nowS() - 3600 }, realRsaKey),
  'not-yet-valid': (h, p) => signJwt(h, { ...p, nbf: nowS() + 3600 }, realRsaKey),
  'issued-in-future': (h, p) => signJwt(h, { ...p, iat: nowS() + 3600, exp: nowS() + 7200 }, realRsaKey),
  'no-sub': (h, p) => {
    const { sub, ...rest } = p;
    return signJwt(h, rest, realRsaKey);
  },
  'not-a-jwt': () => 'this-is-not-a-jwt',
  missing: () => undefined,
};

function tamperMiddleware() {
  return async (ctx, next) => {
    await next();
    const rewrite = TAMPER_MODES[tamper.mode];
    if (!rewrite || ctx.path !== '/token' || ctx.status !== 200) return;
    const body = ctx.body;
    if (!body || typeof body !== 'object' || typeof body.id_token !== 'string') return;
    const [h, p] = body.id_token.split('.').slice(0, 2).map((part) => JSON.parse(Buffer.from(part, 'base64url')));
    const client = clients.find((c) => c.client_id === p.aud) ?? clients[0];
    const replaced = rewrite(h, p, String(client.client_secret ?? ''));
    const { id_token: _original, ...rest } = body;
    ctx.body = replaced === undefined ? rest : { ...rest, id_token: replaced };
    console.error(`[idp] test control: id_token tampered (${tamper.mode})`);
  };
}

// ---- test-only directory changes (IDP_TEST_CONTROL=1) ----

// Claims a test may change on an existing user; null removes the key (e.g. no groups claim).
const USER_CHANGES = {
  groups: (v) => v === null || (Array.isArray(v) && v.every((g) => typeof g === 'string')),
  name: (v) => v === null || typeof v === 'string',
  email_verified: (v) => typeof v === 'boolean',
  preferred_username: (v) => v === null || typeof v === 'string',
  password: (v) => typeof v === 'string',
};
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// A user by email (case-insensitive), falling back to its `login` and then its sub.
function findUser(key) {
  const wanted = key.toLowerCase();
  for (const user of userBySub.values()) {
    if (String(user.email).toLowerCase() === wanted) return user;
  }
  return userByLogin.get(wanted) ?? userBySub.get(key);
}

function userControl(method, key, body) {
  const user = findUser(key);
  if (method === 'GET') return user ? [200, user] : [404, { error: `no user ${key}` }];
  if (method === 'DELETE') {
    if (!user) return [404, { error: `no user ${key}` }];
    removeUser(user);
    console.error(`[idp] test control: deleted user ${user.sub}`);
    return [200, { deleted: user.sub }];
  }
  if (method !== 'POST') return [405, { error: 'GET, POST or DELETE' }];
  if (!user) return [404, { error: `no user ${key}` }];
  if (!isObject(body)) return [400, { error: 'body must be a JSON object' }];
  for (const [field, value] of Object.entries(body)) {
    if (!(field in USER_CHANGES)) {
      return [400, { error: `cannot change ${field}; changeable: ${Object.keys(USER_CHANGES).join(', ')}` }];
    }
    if (!USER_CHANGES[field](value)) return [400, { error: `invalid value for ${field}` }];
  }
  const updated = { ...user };
  for (const [field, value] of Object.entries(body)) {
    if (value === null) delete updated[field];
    else updated[field] = value;
  }
  addUser(updated); // same sub and login: replaces the old record in both maps
  console.error(`[idp] test control: changed ${Object.keys(body).join(', ') || 'nothing'} of ${user.sub}`);
  return [200, updated];
}

function addUserControl(body) {
  if (!isObject(body) || typeof body.email !== 'string' || typeof body.password !== 'string') {
    return [400, { error: 'body must be a JSON user object with at least email and password' }];
  }
  for (const [field, check] of Object.entries(USER_CHANGES)) {
    if (field in body && (body[field] === null || !check(body[field]))) {
      return [400, { error: `invalid value for ${field}` }];
    }
  }
  const user = normalizeUser(body);
  if (typeof user.sub !== 'string' || !user.sub) return [400, { error: 'sub must be a non-empty string' }];
  if (userBySub.has(user.sub) || userByLogin.has(loginKey(user))) {
    return [409, { error: `user ${user.sub} exists` }];
  }
  addUser(user);
  console.error(`[idp] test control: added user ${user.sub}`);
  return [201, user];
}

async function readJson(req, limit = 4 * 1024 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw Object.assign(new Error('body too large'), { status: 413 });
    chunks.push(chunk);
  }
  const raw = Buffer.concat(chunks).toString('utf8');
  try { return raw ? JSON.parse(raw) : undefined; } catch {
    throw Object.assign(new Error('body must be JSON'), { status: 400 });
  }
}

async function handleTestControl(req, res, pathname) {
  const reply = (status, obj) => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(obj));
  };
  let body;
  if (req.method === 'POST') {
    try { body = await readJson(req); } catch (err) { return reply(err.status ?? 400, { error: err.message }); }
  }
  if (pathname === '/__test__/users') {
    if (req.method === 'GET') return reply(200, [...userBySub.values()]);
    if (req.method !== 'POST') return reply(405, { error: 'GET or POST' });
    return reply(...addUserControl(body));
  }
  const m = pathname.match(/^\/__test__\/users\/([^/]+)$/);
  if (m) {
    let key;
    try { key = decodeURIComponent(m[1]); } catch { return reply(400, { error: 'bad user in path' }); }
    return reply(...userControl(req.method, key, body));
  }
  if (pathname !== '/__test__/tamper') return reply(404, { error: 'no such control' });
  if (req.method === 'GET') return reply(200, { mode: tamper.mode, modes: ['off', ...Object.keys(TAMPER_MODES)] });
  if (req.method !== 'POST') return reply(405, { error: 'GET or POST' });
  const mode = isObject(body) ? body.mode : undefined;
  if (mode === undefined) return reply(400, { error: 'body must be JSON {"mode": ...}' });
  if (mode !== 'off' && !(mode in TAMPER_MODES)) return reply(400, { error: `unknown mode ${mode}` });
  tamper.mode = mode;
  return reply(200, { mode });
}

const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
const page = (title, body) => `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body><h1>${esc(title)}</h1>
${body}
</body></html>`;

let provider; // created once the port (hence the issuer) is known

// offline_access without prompt=consent. OIDC Core 11 says the OP MUST obtain consent before
// returning a refresh token for offline_access, and oidc-provider drops offline_access from an
// authorization request unless it also says prompt=consent. This IdP grants consent
// automatically, so it adds prompt=consent itself to a GET /auth that asks for offline_access
// from a client allowed the refresh_token grant with a code response type (unless prompt=none,
// where no consent can be obtained: offline_access is then dropped as before). The request
// then goes through the (automatic) consent step, offline_access ends up in the grant and the
// code's scope, and oidc-provider's default issueRefreshToken (client allowed refresh_token
// and offline_access in the code's granted scopes) issues the refresh token.
function offlineAccessConsent() {
  return async (ctx, next) => {
    if (ctx.method === 'GET' && ctx.path === '/auth') {
      const { scope, prompt, client_id: clientId, response_type: responseType } = ctx.query;
      const client = clients.find((c) => c.client_id === clientId);
      const prompts = typeof prompt === 'string' ? prompt.split(' ').filter(Boolean) : [];
      if (
        typeof scope === 'string' && scope.split(' ').includes('offline_access')
        && typeof responseType === 'string' && responseType.split(' ').includes('code')
        && client?.grant_types?.includes('refresh_token')
        && (prompt === undefined || typeof prompt === 'string')
        && !prompts.includes('none') && !prompts.includes('consent')
      ) {
        ctx.query = { ...ctx.query, prompt: [...prompts, 'consent'].join(' ') };
      }
    }
    await next();
  };
}

// oidc-provider's default prompts, plus: an IdP session whose account has since been deleted
// (test control) must sign in again, instead of failing with server_error (no account, so no
// grant to check consent against).
const policy = interactionPolicy.base();
policy.get('login').checks.add(new interactionPolicy.Check(
  'account_gone',
  'the signed-in account no longer exists',
  'login_required',
  (ctx) => Boolean(ctx.oidc.session.accountId && !ctx.oidc.account),
));

const configuration = {
  clients,
  jwks,
  interactions: { policy },
  findAccount(ctx, sub) {
    const user = userBySub.get(sub);
    if (!user) return undefined;
    return {
      accountId: sub,
      // oidc-provider filters these down to what the granted scopes/claims allow.
      async claims() {
        const claims = {
          sub,
          email: user.email,
          email_verified: user.email_verified,
          preferred_username: user.preferred_username ?? String(user.email).split('@')[0],
        };
        if (user.name !== undefined) claims.name = user.name;
        if (user.groups_overage) {
          // Azure's "group overage": too many groups, so a pointer to Graph (OIDC distributed
          // claims) replaces the list.
          claims._claim_names = { groups: 'src1' };
          claims._claim_sources = { src1: { endpoint: `https://graph.microsoft.com/v1.0/users/${sub}/getMemberObjects` } };
        } else if (user.groups !== undefined) claims.groups = user.groups;
        return claims;
      },
    };
  },
  responseTypes: ['code'],
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
  claims: {
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  // Put scope-requested claims in the ID token too, not only in userinfo.
  conformIdTokenClaims: false,
  pkce: { required: () => true }, // v9 only supports S256
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    IdToken: 3600,
    Interaction: 600,
    Grant: 3600,
    RefreshToken: 86400,
    Session: 3600,
  },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      // `form` is `<form id="op.logoutForm" ...><input type="hidden" name="xsrf" .../></form>`.
      // Add logout=yes (end the whole IdP session, not only this client's part) and a
      // visible button; auto-submit with JS.
      async logoutSource(ctx, form) {
        const withButton = form.replace('</form>',
          '<input type="hidden" name="logout" value="yes"/><button type="submit">Sign out</button></form>');
        ctx.type = 'html';
        ctx.body = page('Signing out', `${withButton}
<script>document.getElementById('op.logoutForm').submit();</script>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.type = 'html';
        ctx.body = page('Signed out', '<p>You have been signed out.</p>');
      },
    },
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', Object.entries(out).map(([k, v]) => `<p><b>${esc(k)}</b>: ${esc(v)}</p>`).join('\n'));
  },
};

// ---- interaction pages (login form + automatic consent) ----

function loginForm(uid, { email = '', error } = {}) {
  return page('Sign in', `${error ? `<p class="error" role="alert">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login">
  <label>Email <input name="email" type="email" value="${esc(email)}" autofocus required></label>
  <label>Password <input name="password" type="password" required></label>
  <button type="submit">Sign in</button>
</form>`);
}

function send(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

async function readForm(req, limit = 64 * 1024) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > limit) throw new Error('request body too large');
  }
  return new URLSearchParams(body);
}

// Grant whatever the consent prompt says is missing (scopes, claims, resource scopes).
async function grantConsent(interaction) {
  const { prompt: { details }, params, session, grantId } = interaction;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
  if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(details.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const savedId = await grant.save();
  return { consent: grantId ? {} : { grantId: savedId } };
}

async function handleInteraction(req, res, uid, action) {
  // Reads the interaction from the `_interaction` cookie (path /interaction/<uid>).
  const interaction = await provider.interactionDetails(req, res);
  if (interaction.uid !== uid) return send(res, 400, page('Error', '<p>interaction mismatch</p>'));
  const { prompt } = interaction;

  if (prompt.name === 'consent') {
    // No consent page: grant and continue (303 to /auth/<uid>).
    return provider.interactionFinished(req, res, await grantConsent(interaction));
  }
  if (prompt.name !== 'login') {
    return send(res, 400, page('Error', `<p>unsupported prompt ${esc(prompt.name)}</p>`));
  }
  if (req.method === 'GET' && !action) {
    return send(res, 200, loginForm(uid, { email: interaction.params.login_hint }));
  }
  if (req.method === 'POST' && action === 'login') {
    const form = await readForm(req);
    const email = (form.get('email') ?? '').trim();
    const user = userByLogin.get(email.toLowerCase());
    if (!user || user.password !== form.get('password')) {
      return send(res, 200, loginForm(uid, { email, error: 'Invalid email or password.' }));
    }
    // login only; the provider then asks for consent, which the GET above auto-grants.
    return provider.interactionFinished(req, res, { login: { accountId: user.sub } },
      { mergeWithLastSubmission: false });
  }
  return send(res, 405, page('Error', '<p>method not allowed</p>'));
}

function route(providerCallback, req, res) {
  const { pathname } = new URL(req.url, 'http://localhost');
  if (TEST_CONTROL && pathname.startsWith('/__test__/')) {
    return handleTestControl(req, res, pathname).catch((err) => {
      console.error(`[idp] test control error: ${err?.stack || err}`);
      if (!res.headersSent) send(res, 500, page('Error', '<p>test control failed</p>'));
    });
  }
  const m = pathname.match(/^\/interaction\/([^/]+)(?:\/([^/]+))?\/?$/);
  if (!m) return providerCallback(req, res);
  return handleInteraction(req, res, m[1], m[2]).catch((err) => {
    console.error(`[idp] interaction error: ${err?.stack || err}`);
    if (!res.headersSent) {
      const status = err?.statusCode ?? 500;
      send(res, status, page('Error', `<p>${esc(err?.error_description || err?.message || err)}</p>`));
    } else {
      res.end();
    }
  });
}

const server = http.createServer();
server.listen(Number(env('IDP_PORT', '0')), env('IDP_HOST', '127.0.0.1'), async () => {
  const issuer = env('IDP_ISSUER', `http://127.0.0.1:${server.address().port}`);
  try {
    provider = new Provider(issuer, configuration);
    // Static clients are validated lazily; fail now rather than with invalid_client later.
    for (const { client_id: id } of clients) {
      if (!await provider.Client.find(id)) throw new Error(`client ${id} not found`);
    }
  } catch (err) {
    console.error(`[idp] invalid configuration: ${err?.error_description || ''} ${err?.stack || err}`);
    process.exit(2);
  }
  provider.use(offlineAccessConsent());
  if (TEST_CONTROL) provider.use(tamperMiddleware());
  provider.on('server_error', (ctx, err) => console.error(`[idp] server_error: ${err?.stack || err}`));
  for (const event of ['authorization.error', 'grant.error', 'end_session.error', 'userinfo.error',
    'backchannel.error', 'introspection.error', 'revocation.error']) {
    provider.on(event, (ctx, err) => console.error(
      `[idp] ${event}: ${err?.error || err} ${err?.error_description || err?.message || ''}`,
    ));
  }
  server.on('request', route.bind(undefined, provider.callback()));
  process.stdout.write(`READY ${issuer}\n`);
});
server.on('error', (err) => {
  console.error(`[idp] server error: ${err?.stack || err}`);
  process.exit(1);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
