// A real OpenID provider for kiln's tests: panva's oidc-provider, configured
// from JSON, on 127.0.0.1 only. Started by kiln_testsupport::oidc; see
// README.md beside this file.
//
// Environment:
//   KILN_OIDC_MODULES  the node_modules directory holding oidc-provider
//   KILN_OIDC_CONFIG   JSON: { port, audience, resource, scopes,
//                      clients: [{ client_id, client_secret, claims }],
//                      device_client_id, accounts: { <id>: { claims } },
//                      extra_keys: [<private JWK>] }  (published beside the
//                      provider's own keys; tokens are still signed RS256)
//
// Prints `READY <issuer>` on stdout once listening; everything else goes to
// stderr.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

function fail(message) {
  console.error(`kiln-oidc: ${message}`);
  process.exit(2);
}

const modules = process.env.KILN_OIDC_MODULES;
if (!modules) fail('KILN_OIDC_MODULES is not set');
let config;
try {
  config = JSON.parse(process.env.KILN_OIDC_CONFIG ?? '');
} catch (e) {
  fail(`KILN_OIDC_CONFIG is not JSON: ${e.message}`);
}
for (const key of ['audience', 'resource', 'scopes']) {
  if (typeof config[key] !== 'string' || !config[key]) fail(`config.${key} must be a non-empty string`);
}

const { default: Provider, errors } = await import(
  pathToFileURL(join(modules, 'oidc-provider', 'lib', 'index.js')).href
);

const TTL = 600;
const clients = new Map((config.clients ?? []).map((c) => [c.client_id, c]));
const accounts = new Map(Object.entries(config.accounts ?? {}));
const deviceClientId = config.device_client_id ?? 'kiln-cli';

// Registered claims come from the provider; a configured claim never
// replaces them (oidc-provider spreads the extra claims first anyway).
function extraClaims(claims) {
  const out = { ...(claims ?? {}) };
  for (const reserved of ['iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'jti', 'client_id', 'scope']) {
    delete out[reserved];
  }
  return out;
}

// Fresh keys per run: a test never depends on a key it did not fetch from
// the JWKS. The RSA key signs access and ID tokens; the EC key is there so
// that a verifier is shown more than one key and must pick by `kid`.
function signingKey(type, options, alg) {
  const { privateKey } = generateKeyPairSync(type, options);
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, alg, use: 'sig', kid: `kiln-test-${alg.toLowerCase()}-${randomBytes(4).toString('hex')}` };
}
const jwks = {
  keys: [
    signingKey('rsa', { modulusLength: 2048 }, 'RS256'),
    signingKey('ec', { namedCurve: 'P-256' }, 'ES256'),
    ...(config.extra_keys ?? []),
  ],
};

// The issuer names the port, so the socket is bound first (port 0: the
// kernel picks a free one, no race with another process).
const server = createServer();
server.listen(config.port ?? 0, '127.0.0.1');
await once(server, 'listening');
const issuer = `http://127.0.0.1:${server.address().port}`;

const resourceServer = {
  scope: config.scopes,
  audience: config.audience,
  accessTokenFormat: 'jwt',
  accessTokenTTL: TTL,
  jwt: { sign: { alg: 'RS256' } },
};

const provider = new Provider(issuer, {
  clients: [
    ...[...clients.values()].map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    {
      client_id: deviceClientId,
      // A refresh token comes with `offline_access` in the device request's
      // scope, as a CLI that keeps a login would ask for.
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'none',
    },
  ],
  jwks,
  cookies: { keys: [randomBytes(32).toString('hex')] },
  async findAccount(_ctx, id) {
    const account = accounts.get(id);
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { ...extraClaims(account.claims), sub: id };
      },
    };
  },
  // A client for tenant A carries tenant A's claims in every access token;
  // a device-flow token carries its account's.
  async extraTokenClaims(_ctx, token) {
    if (token.accountId) return extraClaims(accounts.get(token.accountId)?.claims);
    return extraClaims(clients.get(token.clientId)?.claims);
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: false },
    revocation: { enabled: false },
    deviceFlow: {
      enabled: true,
      // Plain pages: no browser ever renders them, and the defaults pull
      // web fonts from the internet.
      async userCodeInputSource(ctx, form, _out, err) {
        ctx.type = 'html';
        ctx.body = `<!DOCTYPE html><title>kiln test: enter code</title>${err ? `<p>${err.name}</p>` : ''}${form}`;
      },
      async userCodeConfirmSource(ctx, form, _client, _deviceInfo, userCode) {
        ctx.type = 'html';
        ctx.body = `<!DOCTYPE html><title>kiln test: confirm ${userCode}</title>${form}`;
      },
      async successSource(ctx) {
        ctx.type = 'json';
        ctx.body = { approved: true };
      },
    },
    resourceIndicators: {
      enabled: true,
      async defaultResource() {
        return config.resource;
      },
      async useGrantedResource() {
        return true;
      },
      async getResourceServerInfo(_ctx, indicator) {
        if (indicator !== config.resource) throw new errors.InvalidTarget();
        return resourceServer;
      },
    },
  },
  async renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
  ttl: {
    AccessToken: TTL,
    ClientCredentials: TTL,
    DeviceCode: TTL,
    Grant: TTL,
    IdToken: TTL,
    Interaction: TTL,
    RefreshToken: TTL,
    Session: TTL,
  },
});

// Expected outcomes of a test (polling before approval, a wrong secret) are
// not worth a line; anything else is.
const quiet = new Set(['authorization_pending', 'slow_down']);
function logError(event) {
  provider.on(event, (_ctx, err) => {
    if (quiet.has(err?.error)) return;
    const detail = err?.error_description ? ` (${err.error_description})` : '';
    console.error(`kiln-oidc: ${event}: ${err?.error ?? err?.name}: ${err?.message}${detail}`);
  });
}
for (const event of [
  'server_error',
  'grant.error',
  'device_authorization.error',
  'code_verification.error',
  'device_resume.error',
  'discovery.error',
  'jwks.error',
]) {
  logError(event);
}

// The interaction a device code's approval runs into: the login and consent
// prompts of oidc-provider's own policy, answered without a page. The
// account is named by the test's approval request (a header), never by the
// end-user, as this server is a test double.
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    const accountId = req.headers['x-kiln-test-account'];
    if (!accounts.has(accountId)) {
      return send(res, 400, { error: 'unknown_account', account: accountId ?? null });
    }
    return provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
  }
  if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  return send(res, 500, { error: 'unexpected_prompt', prompt: prompt.name });
}

// Approves a device code as a browser would: the verification page, the
// confirmation form, then the interactions, with the cookies each step sets.
// Without an account, denies it instead: the form's "abort" button, after
// which the token endpoint answers `access_denied`.
async function approve(userCode, accountId) {
  const jar = new Map();
  async function call(path, init = {}) {
    const headers = new Headers(init.headers);
    if (jar.size) headers.set('cookie', [...jar].map(([k, v]) => `${k}=${v}`).join('; '));
    const res = await fetch(new URL(path, issuer), { ...init, headers, redirect: 'manual' });
    for (const cookie of setCookies(res.headers)) {
      const pair = cookie.split(';', 1)[0];
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      if (!value || /expires=Thu, 01 Jan 1970/i.test(cookie)) jar.delete(name);
      else jar.set(name, value);
    }
    return res;
  }

  const page = await call('/device');
  const xsrf = (await page.text()).match(/name="xsrf" value="([^"]+)"/)?.[1];
  if (!xsrf) throw new Error(`no xsrf token on the verification page (status ${page.status})`);
  const decision = accountId === undefined ? { abort: 'yes' } : { confirm: 'yes' };
  let res = await call('/device', {
    method: 'POST',
    body: new URLSearchParams({ xsrf, user_code: userCode, ...decision }),
  });
  if (accountId === undefined) {
    const page = await res.text();
    if (!page.includes('AbortedError')) {
      const err = new Error(`denial ended with ${res.status}: ${page}`);
      err.status = 400;
      throw err;
    }
    return;
  }
  for (let hops = 0; res.status >= 300 && res.status < 400; hops += 1) {
    if (hops === 10) throw new Error('too many redirects');
    await res.arrayBuffer();
    res = await call(res.headers.get('location'), {
      headers: { 'x-kiln-test-account': accountId },
    });
  }
  const body = await res.text();
  if (res.status !== 200 || !body.includes('"approved":true')) {
    // Most often the test's own mistake: an unknown, expired or used code.
    const err = new Error(`approval ended with ${res.status}: ${body}`);
    err.status = 400;
    throw err;
  }
}

// Node 18's fetch may lack getSetCookie: split the joined header at commas
// that start a new cookie (an Expires date has a comma too).
function setCookies(headers) {
  if (typeof headers.getSetCookie === 'function') return headers.getSetCookie();
  const joined = headers.get('set-cookie');
  return joined ? joined.split(/,(?=\s*[^;,=\s]+=)/) : [];
}

function send(res, status, body) {
  res.statusCode = status;
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify(body));
}

async function readJson(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('body too large');
    chunks.push(chunk);
  }
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

const oidc = provider.callback();
server.on('request', (req, res) => {
  const { pathname } = new URL(req.url, issuer);
  let handled;
  if (pathname.startsWith('/interaction/') && req.method === 'GET') {
    handled = interaction(req, res);
  } else if (pathname === '/test/approve' && req.method === 'POST') {
    // Test only: approve a pending device code for one of the configured
    // accounts. Responds once the device code carries the account.
    handled = (async () => {
      let body;
      try {
        body = await readJson(req);
      } catch (e) {
        return send(res, 400, { error: 'invalid_request', error_description: e.message });
      }
      const { user_code: userCode, account } = body ?? {};
      if (typeof userCode !== 'string' || !accounts.has(account)) {
        return send(res, 400, { error: 'invalid_request', error_description: 'user_code and a configured account are required' });
      }
      await approve(userCode, account);
      return send(res, 200, { approved: true });
    })();
  } else if (pathname === '/test/deny' && req.method === 'POST') {
    // Test only: deny a pending device code, as the end-user's "abort".
    handled = (async () => {
      let body;
      try {
        body = await readJson(req);
      } catch (e) {
        return send(res, 400, { error: 'invalid_request', error_description: e.message });
      }
      const { user_code: userCode } = body ?? {};
      if (typeof userCode !== 'string') {
        return send(res, 400, { error: 'invalid_request', error_description: 'user_code is required' });
      }
      await approve(userCode, undefined);
      return send(res, 200, { denied: true });
    })();
  } else {
    oidc(req, res);
    return;
  }
  handled.catch((err) => {
    console.error(`kiln-oidc: ${req.method} ${pathname}: ${err?.stack ?? err}`);
    if (!res.headersSent) send(res, err?.status ?? 500, { error: err?.status ? 'invalid_request' : 'server_error', error_description: String(err?.message ?? err) });
    else res.end();
  });
});

process.on('SIGTERM', () => process.exit(0));
console.log(`READY ${issuer}`);
