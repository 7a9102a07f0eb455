// A real OpenID Provider (the OpenID Certified `oidc-provider`) for the end-to-end suite, on 127.0.0.1.
//
//   node idp.mjs DIRECTORY.json
//
// DIRECTORY.json: {"audience": "api://trigger-gateway", "tenants": [{"id": GUID, "alg": "RS256" | "ES256",
// "clients": [{"client_id", "client_secret", "claims": {...}}]}]}. The test suite writes it (tests/e2e/directory.py).
//
// Each tenant is its own Provider instance, mounted under an Entra-shaped issuer path
// http://127.0.0.1:PORT/<tenant>/v2.0 (discovery, JWKS and token endpoint below it). Also served:
//   POST /<tenant>/oauth2/token   the v1-shaped token endpoint that a Power Automate HTTP action with
//                                 "Active Directory OAuth" calls (client id, secret and `resource` in the form);
//                                 the same Provider's token endpoint, only the path differs.
//   POST /_admin/rotate/<tenant>  a new signing key: tokens are signed with it from now on, and the JWKS
//                                 publishes [new, previous] (the previous key stays, as Entra keeps old keys).
// Prints one JSON line {"message": "listening", "url": ...} once it serves; SIGTERM stops it.
//
// Client credentials are app-only by nature. For this suite, users are represented by clients whose tokens carry
// user claims (upn, idtyp "user", ...): the sidecar only sees claims, and a user's token from an interactive flow
// carries the same ones. The claims come from `extraTokenClaims`, so the token is still minted, signed and
// published by oidc-provider itself.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

import { Provider, errors } from 'oidc-provider';

const directory = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const TOKEN_TTL = 3600;

function newKey(alg) {
  const { privateKey } = alg === 'ES256'
    ? crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), use: 'sig', alg, kid: crypto.randomUUID() };
}

function providerFor(issuer, tenant, keys) {
  const claimsByClient = new Map(tenant.clients.map((client) => [client.client_id, client.claims]));
  // No adapter: the in-memory default is enough (JWT access tokens are not looked up again; one process).
  const provider = new Provider(issuer, {
    clients: tenant.clients.map((client) => ({
      client_id: client.client_id,
      client_secret: client.client_secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_post', // what Power Automate sends: id and secret in the form
      id_token_signed_response_alg: tenant.alg, // the default (RS256) needs an RSA key, which an ES256 tenant lacks
    })),
    jwks: { keys },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // `resource` names the API (Power Automate's "Audience"); a request without it gets the only API there is.
        defaultResource: async () => directory.audience,
        getResourceServerInfo: async (_ctx, resource) => {
          if (resource !== directory.audience) throw new errors.InvalidTarget();
          return {
            scope: '',
            audience: directory.audience,
            accessTokenFormat: 'jwt',
            accessTokenTTL: TOKEN_TTL,
            jwt: { sign: { alg: tenant.alg } },
          };
        },
      },
    },
    // Entra-shaped claims (tid, oid, upn, roles, azp, appid, idtyp, ...) for each client.
    extraTokenClaims: async (_ctx, token) => claimsByClient.get(token.clientId),
    ttl: { ClientCredentials: TOKEN_TTL },
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  });
  provider.on('server_error', (_ctx, error) => {
    console.error(JSON.stringify({ message: 'server_error', error: String(error) }));
  });
  return provider;
}

// tenant id -> {tenant, issuer, keys, handler}; a rotation replaces the entry's keys and Provider (its handler).
const tenants = new Map();

function mount(req, res, entry, rest) {
  // As express mounts a sub-app: the provider sees the path below its mount point, and derives the mount point
  // (for the URLs it publishes) from originalUrl.
  req.originalUrl = req.url;
  req.url = rest || '/';
  return entry.handler(req, res);
}

function rotate(res, entry) {
  entry.keys = [newKey(entry.tenant.alg), entry.keys[0]];
  entry.handler = providerFor(entry.issuer, entry.tenant, entry.keys).callback();
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ kids: entry.keys.map((key) => key.kid) }));
}

function notFound(res) {
  res.writeHead(404, { 'content-type': 'application/json' });
  res.end('{"error":"not_found"}');
}

function dispatch(req, res) {
  const path = req.url.split('?')[0];
  const [, first, second, third] = path.split('/');
  if (first === '_admin' && second === 'rotate' && req.method === 'POST' && tenants.has(third)) {
    return rotate(res, tenants.get(third));
  }
  const entry = tenants.get(first);
  if (entry === undefined) return notFound(res);
  const prefix = `/${first}/v2.0`;
  if (path === prefix || path.startsWith(`${prefix}/`)) return mount(req, res, entry, req.url.slice(prefix.length));
  if (path === `/${first}/oauth2/token`) {
    req.url = `${prefix}/token${req.url.slice(path.length)}`;
    return mount(req, res, entry, req.url.slice(prefix.length));
  }
  return notFound(res);
}

const server = http.createServer(dispatch);
server.listen(0, '127.0.0.1', () => {
  const baseUrl = `http://127.0.0.1:${server.address().port}`;
  for (const tenant of directory.tenants) {
    const issuer = `${baseUrl}/${tenant.id}/v2.0`;
    const keys = [newKey(tenant.alg)];
    tenants.set(tenant.id, { tenant, issuer, keys, handler: providerFor(issuer, tenant, keys).callback() });
  }
  console.log(JSON.stringify({ message: 'listening', url: baseUrl }));
});

process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
});
