// A real OpenID provider (oidc-provider) on loopback, for the OAuth tests (tests/oidc_provider.py).
//
//   node provider.mjs CONFIG.json
//
// CONFIG (written by the Python fixture):
//   port              TCP port on 127.0.0.1 (0: any free one)
//   jwks              {"keys": [...]}: private JWKs; the first RS256 key signs, all are published
//   access_token_ttl  seconds an access token lives (short for the refresh tests)
//   accounts          {"<login>": {"email": "...", "org_id": "..."}}: claims of known users; any
//                     other login signs in too, with email <login>@example.com and no org_id
//   cookie_keys       ["..."]: keys signing the interaction cookies (kept across reloads)
//   opaque_resources  [resource, ...]: access tokens for these are opaque (checked by
//                     introspection), for any other resource JWTs whose aud is the resource
//   audiences         {resource: audience}: the aud of JWT access tokens for that resource, when
//                     it is not the resource itself (a token for another audience, refused)
//   client_id_metadata_documents
//                     true: clients may be https://localhost:<port>/... URLs whose JSON the
//                     provider fetches (OAuth Client ID Metadata Documents); the test serves
//                     them with a certificate of its own CA, which NODE_EXTRA_CA_CERTS names
//
// When listening it prints one JSON line on stdout: {"issuer", "port", "kids"}. The issuer is
// http://127.0.0.1:<port>, and stays so for the life of the process.
//
// Key rotation: oidc-provider fixes its keys when a Provider is constructed, so
// `POST /_harness/reload` re-reads CONFIG and builds a new Provider for the same issuer on the
// same listening socket. Clients, grants, sessions and refresh tokens live in one in-memory
// adapter shared by every Provider of this process, so they outlive a reload (oidc-provider's
// own gives each Provider a store of its own). The answer is {"kids": [...]}, the key ids now
// published.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';
// The in-memory adapter oidc-provider uses by default, made once here so that every Provider of
// this process (one per reload) shares its store. A deep import: the version is pinned by the
// lock file.
import { createMemoryAdapter } from 'oidc-provider/lib/adapters/memory_adapter.js';

const RESOURCE_SCOPES = ['spiral:read', 'spiral:write', 'spiral:query', 'spiral:admin'];
const RELOAD_PATH = '/_harness/reload';
const CLOCK_TOLERANCE = 15;  // oidc-provider's default, also the adapter's grace on expiry
const sharedAdapter = createMemoryAdapter(CLOCK_TOLERANCE);

const configPath = process.argv[2] || process.env.OIDC_PROVIDER_CONFIG;
if (!configPath) {
  process.stderr.write('usage: node provider.mjs CONFIG.json\n');
  process.exit(2);
}

function readConfig() {
  return JSON.parse(readFileSync(configPath, 'utf8'));
}

function accountClaims(config, login) {
  const known = config.accounts?.[login];
  return {
    email: known?.email ?? `${login}@example.com`,
    org_id: known?.org_id,
  };
}

// Only the test's own origin: oidc-provider's fetch refuses loopback addresses (a defence
// against server-side request forgery), so for these documents it is given a plain fetch.
function isTestDocument(url) {
  const parsed = URL.parse(url);
  return parsed?.protocol === 'https:' && parsed.hostname === 'localhost';
}

function clientIdMetadataDocument(config) {
  if (!config.client_id_metadata_documents) {
    return { enabled: false };
  }
  return {
    enabled: true,
    ack: 'draft-02',
    allowFetch: async (ctx, clientId) => isTestDocument(clientId),
  };
}

async function fetchTestDocument(url, options) {
  if (!isTestDocument(String(url))) {
    throw new Error(`the test provider fetches nothing but https://localhost documents: ${url}`);
  }
  const plain = { ...options };
  delete plain.dispatcher;
  return globalThis.fetch(url, plain);
}

function buildProvider(issuer, config) {
  const ttl = Number(config.access_token_ttl ?? 300);
  const provider = new Provider(issuer, {
    adapter: sharedAdapter,
    clockTolerance: CLOCK_TOLERANCE,
    jwks: config.jwks,
    cookies: { keys: config.cookie_keys },
    // The product's scopes are listed here too: oidc-provider refuses a registration whose
    // `scope` names a value it does not know, and MCP clients register with the scopes they
    // were challenged for.
    scopes: ['openid', 'offline_access', 'email', ...RESOURCE_SCOPES],
    claims: { openid: ['sub'], email: ['email'] },
    // Dynamically registered clients may carry the org they act for (client credentials).
    extraClientMetadata: { properties: ['org_id'] },
    pkce: { required: () => true },
    fetch: fetchTestDocument,
    features: {
      clientIdMetadataDocument: clientIdMetadataDocument(config),
      devInteractions: { enabled: true },
      registration: { enabled: true },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // A request naming no resource gets a token for the one it was granted.
        defaultResource: async (ctx, client, oneOf) => oneOf,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (ctx, resource) => (
          (config.opaque_resources ?? []).includes(resource)
            ? {
              scope: RESOURCE_SCOPES.join(' '),
              audience: resource,
              accessTokenTTL: ttl,
              accessTokenFormat: 'opaque',
            }
            : {
              scope: RESOURCE_SCOPES.join(' '),
              audience: config.audiences?.[resource] ?? resource,
              accessTokenTTL: ttl,
              accessTokenFormat: 'jwt',
              jwt: { sign: { alg: 'RS256' } },
            }),
      },
    },
    ttl: {
      AccessToken: ttl,
      ClientCredentials: ttl,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
      RefreshToken: 3600,
      AuthorizationCode: 60,
      IdToken: 3600,
    },
    // A refresh token for every client allowed the grant, offline_access or not: MCP clients
    // refresh whenever they hold one.
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    async findAccount(ctx, sub) {
      return {
        accountId: sub,
        async claims() {
          const { email } = accountClaims(config, sub);
          return { sub, email };
        },
      };
    },
    // In the access token too (resource servers see no ID token): the user's email, which names
    // the user writes act for, and the org, the claim tenant bindings may key on; a machine
    // client's own org.
    async extraTokenClaims(ctx, token) {
      const claims = token.accountId
        ? accountClaims(config, token.accountId)
        : { org_id: token.client?.org_id };
      const defined = Object.entries(claims).filter(([, value]) => value !== undefined);
      return defined.length ? Object.fromEntries(defined) : undefined;
    },
  });
  // Why the provider refused something goes to stderr, which the fixture shows when a start or
  // a flow fails.
  for (const event of ['authorization.error', 'grant.error', 'registration_create.error',
    'introspection.error', 'server_error']) {
    provider.on(event, (ctx, error) => {
      process.stderr.write(`${event}: ${error.message} ${error.error_description ?? ''} ${error.error_detail ?? ''}\n`);
    });
  }
  return provider;
}

function publishedKids(config) {
  return config.jwks.keys.map((key) => key.kid);
}

let config = readConfig();
let handler;
let issuer;

const server = createServer((req, res) => {
  if (req.method === 'POST' && req.url === RELOAD_PATH) {
    try {
      config = readConfig();
      handler = buildProvider(issuer, config).callback();
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kids: publishedKids(config) }));
    } catch (error) {
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: String(error.message || error) }));
    }
    return;
  }
  handler(req, res);
});

server.listen(Number(config.port ?? 0), '127.0.0.1', () => {
  const { port } = server.address();
  issuer = `http://127.0.0.1:${port}`;
  handler = buildProvider(issuer, config).callback();
  process.stdout.write(`${JSON.stringify({ issuer, port, kids: publishedKids(config) })}\n`);
});

// The fixture ends the process with SIGTERM; close the socket so the port is freed at once.
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
