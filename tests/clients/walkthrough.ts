// A client written against the types openapi-typescript generates from session/openapi.yaml (into ./schema.d.ts,
// in a temporary directory: tests/test_clients.py generates them, then runs `tsc --noEmit` on this file).
// It is never run: it must type-check, which it does only while the document keeps each problem's precision.
import type { components, paths } from "./schema";

type Schemas = components["schemas"];
type ProblemJson = "application/problem+json";

// The problem documents an operation can answer with, as one union discriminated by `code`.
type Problems<Responses> = {
  [S in keyof Responses]: Responses[S] extends { content: { [M in ProblemJson]: infer P } } ? P : never;
}[keyof Responses];

export type LoginProblem = Problems<paths["/login"]["post"]["responses"]>;
export type ProfileProblem = Problems<paths["/profile"]["get"]["responses"]>;
export type ListSessionsProblem = Problems<paths["/sessions"]["get"]["responses"]>;

// Every 401 names its scheme, the one of /login too (a header the document did not name would be `unknown`).
type Expect<T extends true> = T;
type LoginChallenge = paths["/login"]["post"]["responses"][401]["headers"]["WWW-Authenticate"];
export type LoginNamesItsScheme = Expect<LoginChallenge extends string ? true : false>;

async function call<T>(url: string, init: RequestInit): Promise<{ status: number; body: T }> {
  const response = await fetch(url, init);
  return { status: response.status, body: (await response.json()) as T };
}

export async function login(
  base: string,
  body: Schemas["LoginRequest"],
): Promise<{ status: number; body: Schemas["LoginOut"] | LoginProblem }> {
  return call(`${base}/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

export async function profile(
  base: string,
  token: Schemas["LoginOut"]["token"],
): Promise<{ status: number; body: Schemas["ProfileOut"] | ProfileProblem }> {
  return call(`${base}/profile`, { headers: { Authorization: `Bearer ${token}` } });
}

// What to tell the user, for every problem a login can answer with: `never` proves the switch complete.
export function loginMessage(problem: LoginProblem): string {
  switch (problem.code) {
    case "invalid_credentials":
      return "Wrong username or password.";
    case "too_many_attempts":
      return "Too many attempts: wait, then try again.";
    case "account_disabled":
      return "This account is disabled.";
    case "invalid_request":
      return problem.errors.map((error) => `${error.loc.join(".")}: ${error.msg}`).join("; ");
    case "invalid_json":
    case "payload_too_large":
    case "unsupported_media_type":
    case "service_unavailable":
      return problem.detail;
    default: {
      const unexpected: never = problem;
      return unexpected;
    }
  }
}

// A signed-in call: each code narrows the problem to its own members.
export function nextStep(problem: ProfileProblem | ListSessionsProblem): string {
  switch (problem.code) {
    case "unauthenticated": {
      const reason: Schemas["UnauthenticatedReason"] = problem.reason;
      return `sign in again (${reason})`;
    }
    case "reauthentication_required": {
      const seconds: number = problem.max_age;
      return `POST /reauthenticate within ${seconds} s, then retry`;
    }
    case "invalid_request":
      return problem.errors[0]?.msg ?? problem.detail;
    case "service_unavailable":
      return problem.title;
    default: {
      const unexpected: never = problem;
      return unexpected;
    }
  }
}

export async function walkThrough(base: string): Promise<string> {
  const opened = await login(base, { username: "alice", password: "correct horse battery" });
  if (opened.status !== 200 || !("token" in opened.body)) {
    return loginMessage(opened.body as LoginProblem);
  }
  const read = await profile(base, opened.body.token);
  if ("code" in read.body) {
    return nextStep(read.body);
  }
  const version: number = read.body.version;
  return `${read.body.username} (version ${version})`;
}
