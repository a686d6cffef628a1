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
//   IDP_TEST_CONTROL  "1" enables the test-only control endpoint below; off by default, and
//                without it the IdP behaves exactly as described above.
//
// Test control (only with IDP_TEST_CONTROL=1), for authgate's attack tests:
//   POST /__test__/tamper {"mode": "<mode>"}  rewrites the id_token of every later token
//        endpoint response until set back to "off"; GET /__test__/tamper tells the mode.
//        Modes: see TAMPER_MODES (alg "none", another key, HS256 keyed with the client secret,
//        wrong iss/aud/nonce, expired, not yet valid, no id_token at all, ...). Re-signed tokens
//        use the IdP's real RS256 key, so only the named defect is wrong.
//
// On success it prints exactly one line "READY <issuer>" to stdout. Errors go to stderr.
// Login UI: GET /interaction/<uid> renders a form posting to /interaction/<uid>/login;
// consent is granted automatically. Logout: /session/end (RP-initiated logout).
// PKCE (S256) is required. offline_access is only honoured together with prompt=consent.

import * as crypto from 'node:crypto';
import * as http from 'node:http';

import Provider from 'oidc-provider';

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
const users = json('IDP_USERS', DEFAULT_USERS).map((u) => ({ sub: u.email, email_verified: true, ...u }));
const userBySub = new Map(users.map((u) => [u.sub, u]));
const userByEmail = new Map(users.map((u) => [String(u.login ?? u.email).toLowerCase(), u]));

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

async function handleTestControl(req, res, pathname) {
  const reply = (status, obj) => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(obj));
  };
  if (pathname !== '/__test__/tamper') return reply(404, { error: 'no such control' });
  if (req.method === 'GET') return reply(200, { mode: tamper.mode, modes: ['off', ...Object.keys(TAMPER_MODES)] });
  if (req.method !== 'POST') return reply(405, { error: 'GET or POST' });
  let raw = '';
  for await (const chunk of req) raw += chunk;
  let mode;
  try { ({ mode } = JSON.parse(raw)); } catch { return reply(400, { error: 'body must be JSON {"mode": ...}' }); }
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

const configuration = {
  clients,
  jwks,
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
        if (user.groups !== undefined) claims.groups = user.groups;
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
    const user = userByEmail.get(email.toLowerCase());
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
