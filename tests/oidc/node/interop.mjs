// openid-client (a certified OpenID Connect relying party library) against the gateway.
// FLOW=code (the default): discovery, PAR + PKCE S256 + DPoP code flow, ID token validation,
// DPoP userinfo, DPoP refresh, and the RP-initiated logout URL.
// FLOW=device: the device authorization grant (RFC 8628) with DPoP, as a kiosk's back end:
// initiateDeviceAuthorization, then pollDeviceAuthorizationGrant until the resident approves
// (in the app or by a card tap; the Python test plays the resident and the kiosk's reader),
// ID token validation, DPoP userinfo, DPoP refresh.
// Driven by tests/oidc/test_openid_client.py: each flow prints one JSON line for the test to
// act on ({"authorize": url} or {"device": the device authorization response}), the code flow
// then reads the redirect the browser was sent to on stdin, and each prints its results as
// one last JSON line. The DPoP public key is printed too, so the test can check cnf.jkt.
import * as client from 'openid-client'
import { createInterface } from 'node:readline'

const env = process.env
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const issuer = new URL(env.ISSUER)
// CLIENT_SECRET unset: a public client (auth_method none, RFC 6749 §2.1)
const auth = env.CLIENT_SECRET ? client.ClientSecretBasic(env.CLIENT_SECRET) : client.None()
const config = await client.discovery(
  issuer, env.CLIENT_ID, undefined, auth,
  { execute: [client.allowInsecureRequests] })   // the test server is plain http on loopback
// openid-client checks the ID token's claims (iss, aud, azp, exp, iat, nonce) by itself; its
// signature (against jwks_uri) only with the non-repudiation checks, turned on here
client.enableNonRepudiationChecks(config)

const dpopKeys = await client.randomDPoPKeyPair(env.DPOP_ALG || 'ES256')
const DPoP = client.getDPoPHandle(config, dpopKeys)
const dpopJwk = await crypto.subtle.exportKey('jwk', dpopKeys.publicKey)

async function codeFlow () {
  const verifier = client.randomPKCECodeVerifier()
  const state = client.randomState()
  const nonce = client.randomNonce()
  const url = await client.buildAuthorizationUrlWithPAR(config, {
    redirect_uri: env.REDIRECT_URI, scope: 'openid profile', state, nonce,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
  }, { DPoP })
  out({ authorize: url.href })

  const rl = createInterface({ input: process.stdin })
  const callback = await new Promise((resolve) => rl.once('line', resolve))
  rl.close()

  const tokens = await client.authorizationCodeGrant(config, new URL(callback), {
    pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce,
    idTokenExpected: true,
  }, undefined, { DPoP })
  const claims = tokens.claims()
  const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub, { DPoP })
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token, undefined, { DPoP })
  const again = await client.fetchUserInfo(config, refreshed.access_token, claims.sub, { DPoP })
  // RP-Initiated Logout 1.0: the URL openid-client builds from discovery's end_session_endpoint
  const endSession = client.buildEndSessionUrl(config, {
    id_token_hint: tokens.id_token, post_logout_redirect_uri: env.POST_LOGOUT_URI, state,
  })
  out({
    token_type: tokens.token_type, sub: claims.sub, aud: claims.aud, nonce: claims.nonce,
    userinfo, refreshed_token_type: refreshed.token_type,
    refreshed_differs: refreshed.refresh_token !== tokens.refresh_token, again,
    access_token: tokens.access_token, refreshed_access_token: refreshed.access_token,
    dpop_jwk: dpopJwk, end_session: endSession.href, state,
    refresh_token: refreshed.refresh_token,
  })
}

async function deviceFlow () {
  const started = await client.initiateDeviceAuthorization(config, { scope: env.SCOPE })
  out({ device: started })
  // bounded: the test's own wait is 60 s; openid-client's default is the code's whole life
  let tokens
  try {
    tokens = await client.pollDeviceAuthorizationGrant(
      config, started, undefined, { DPoP, signal: AbortSignal.timeout(45000) })
  } catch (err) {   // the grant's end as openid-client reports it (e.g. access_denied)
    if (!(err instanceof client.ResponseBodyError)) throw err
    out({ error: err.error, status: err.status })
    return
  }
  const claims = tokens.claims()   // validated by openid-client, the signature included
  const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub, { DPoP })
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token, undefined, { DPoP })
  const again = await client.fetchUserInfo(config, refreshed.access_token, claims.sub, { DPoP })
  out({
    token_type: tokens.token_type, scope: tokens.scope, claims, userinfo,
    refreshed_token_type: refreshed.token_type,
    refreshed_differs: refreshed.refresh_token !== tokens.refresh_token, again,
    access_token: tokens.access_token, refreshed_access_token: refreshed.access_token,
    refresh_token: refreshed.refresh_token, dpop_jwk: dpopJwk,
  })
}

await (env.FLOW === 'device' ? deviceFlow() : codeFlow())
