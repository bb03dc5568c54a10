// The peer of script/bench's token and introspection rows (issue 13; docs/performance.md):
// node-oidc-provider (pinned in package.json / package-lock.json, installed by the bench with
// `npm ci` into loadtests/peer/.cache/), configured as a user would for machine clients:
//
//   * its in-memory adapter (the default one: an LRU in each process);
//   * client_credentials with ES256 JWT access tokens through resourceServers
//     (features.resourceIndicators, a default resource so a plain client_credentials request
//     gets a JWT access token, the same kind of token the gateway issues);
//   * client_secret_basic;
//   * introspection enabled. node-oidc-provider refuses to introspect structured (JWT) tokens
//     (shared/reject_structured_tokens.js), so the introspection row introspects an opaque
//     client_credentials token of a second resource server (OPAQUE_RS) — the only kind it
//     introspects. Its introspection policy is the gateway's: a client sees only its own
//     tokens;
//   * the same worker count as the gateway through node:cluster (the primary only forwards
//     connections). The in-memory adapter lives in each worker, so an opaque token issued by
//     one worker is copied to the others over the cluster's IPC channel when it is saved:
//     introspection reads stay local to the worker, as with one worker (this costs the peer
//     nothing on the measured requests; the JWT tokens of the token row are not stored at all).
//
// Env: PEER_PORT, PEER_WORKERS (default 2), PEER_CLIENT_ID, PEER_CLIENT_SECRET.
// Prints "peer ready <port> <workers>" on stdout once every worker listens.
import cluster from 'node:cluster';
import { generateKeyPairSync } from 'node:crypto';

const port = Number(process.env.PEER_PORT || 3000);
const workers = Math.max(1, Number(process.env.PEER_WORKERS || 2));
const clientId = process.env.PEER_CLIENT_ID || 'bench-gate';
const clientSecret = process.env.PEER_CLIENT_SECRET || 'bench-secret';
const JWT_RS = 'urn:gateway-bench:rs';
const OPAQUE_RS = 'urn:gateway-bench:rs-opaque';
const SCOPE = 'codes:verify';

if (cluster.isPrimary) {
  // one ES256 signing key for every worker (a token signed by one verifies against the
  // JWKS any worker serves)
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'bench-es256', alg: 'ES256', use: 'sig' };
  let listening = 0;
  for (let i = 0; i < workers; i += 1) {
    const worker = cluster.fork({ PEER_JWK: JSON.stringify(jwk) });
    worker.on('message', (msg) => {
      if (msg && msg.replicate) {
        for (const other of Object.values(cluster.workers)) {
          if (other && other !== worker) other.send(msg);
        }
      }
    });
  }
  cluster.on('listening', () => {
    listening += 1;
    if (listening === workers) process.stdout.write(`peer ready ${port} ${workers}\n`);
  });
  cluster.on('exit', (w, code, signal) => {
    process.stderr.write(`peer worker ${w.process.pid} exited (${signal || code})\n`);
  });
  const stop = () => {
    for (const w of Object.values(cluster.workers)) w?.kill();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  const { default: Provider, errors } = await import('oidc-provider');
  // the adapter node-oidc-provider uses when none is configured (no "exports" map: importable)
  const { default: MemoryAdapter } = await import('oidc-provider/lib/adapters/memory_adapter.js');
  const jwk = JSON.parse(process.env.PEER_JWK);

  // The default in-memory adapter, its one LRU per process; saved opaque client_credentials
  // tokens are also sent to the other workers (see the header).
  const adapters = new Map();
  const adapterFor = (name) => {
    let a = adapters.get(name);
    if (!a) {
      a = new MemoryAdapter(name);
      if (name === 'ClientCredentials' && workers > 1) {
        const upsert = a.upsert.bind(a);
        a.upsert = async (id, payload, expiresIn) => {
          await upsert(id, payload, expiresIn);
          process.send({ replicate: [name, id, payload, expiresIn] });
        };
        a.localUpsert = upsert;
      }
      adapters.set(name, a);
    }
    return a;
  };
  process.on('message', (msg) => {
    if (msg && msg.replicate) {
      const [name, id, payload, expiresIn] = msg.replicate;
      const a = adapterFor(name);
      (a.localUpsert || a.upsert.bind(a))(id, payload, expiresIn);
    }
  });

  const resourceServer = (resource) => {
    if (resource === JWT_RS) {
      return {
        scope: SCOPE, audience: JWT_RS, accessTokenTTL: 600, accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      };
    }
    if (resource === OPAQUE_RS) {
      return { scope: SCOPE, audience: OPAQUE_RS, accessTokenTTL: 600, accessTokenFormat: 'opaque' };
    }
    throw new errors.InvalidTarget();
  };

  const provider = new Provider(`http://127.0.0.1:${port}`, {
    adapter: adapterFor,
    clients: [{
      client_id: clientId, client_secret: clientSecret, grant_types: ['client_credentials'],
      response_types: [], redirect_uris: [], token_endpoint_auth_method: 'client_secret_basic',
      scope: SCOPE, id_token_signed_response_alg: 'ES256', // the only key is ES256
    }],
    scopes: [SCOPE],
    jwks: { keys: [jwk] },
    cookies: { keys: ['gateway-bench-peer'] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        allowedPolicy: async (ctx, client, token) => token.clientId === client.clientId,
      },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => JWT_RS,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => resourceServer(resource),
      },
    },
    ttl: { ClientCredentials: 600 },
  });
  provider.listen(port, '127.0.0.1');
}
