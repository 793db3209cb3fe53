// An OpenID Connect provider for the sign-in tests, on loopback.
//
// It is the certified `oidc-provider` package with its development
// interactions: a login form that accepts any login and password, then a
// consent form with a Cancel link. The login is the account's `sub`; further
// claims come from a JSON file the tests write (ACCOUNTS_FILE, an object of
// login -> claims), read again on every lookup so a test can change an
// account between two sign-ins.
//
// Settings come from the environment: PORT, ISSUER, CLIENT_ID,
// CLIENT_SECRET, REDIRECT_URIS and POST_LOGOUT_REDIRECT_URIS (both
// comma-separated) and ACCOUNTS_FILE.

import { generateKeyPair, exportJWK } from "jose";
import { readFileSync } from "node:fs";
import Provider from "oidc-provider";

const env = process.env;
const list = (value) => (value || "").split(",").filter(Boolean);

function accountClaims(login) {
  let accounts = {};
  try {
    accounts = JSON.parse(readFileSync(env.ACCOUNTS_FILE, "utf8"));
  } catch {
    // No file yet: every login is an account with default claims.
  }
  return {
    email: `${login}@example.org`,
    email_verified: true,
    name: login,
    preferred_username: login,
    ...accounts[login],
    sub: login,
  };
}

const { privateKey } = await generateKeyPair("RS256", { extractable: true });
const signingKey = { ...(await exportJWK(privateKey)), kid: "test-key", alg: "RS256", use: "sig" };

const provider = new Provider(env.ISSUER, {
  clients: [
    {
      client_id: env.CLIENT_ID,
      client_secret: env.CLIENT_SECRET,
      redirect_uris: list(env.REDIRECT_URIS),
      post_logout_redirect_uris: list(env.POST_LOGOUT_REDIRECT_URIS),
      response_types: ["code"],
      grant_types: ["authorization_code"],
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: ["test-provider-cookie-key"] },
  // Claims that carry roles and organisation, in the shapes providers use:
  // a plain string, a list, and Keycloak's nested realm roles.
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: [
      "name",
      "given_name",
      "family_name",
      "preferred_username",
      "org",
      "roles",
      "realm_access",
    ],
  },
  // Insist on PKCE, so a client that forgets it fails here too.
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  async findAccount(ctx, login) {
    return {
      accountId: login,
      async claims() {
        return accountClaims(login);
      },
    };
  },
});

provider.listen(Number(env.PORT), "127.0.0.1", () => {
  console.log(`test provider ready at ${env.ISSUER}`);
});
