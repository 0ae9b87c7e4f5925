import { ServiceError } from "../errors.js";

/** Too many sign-in attempts for an email or from an address; `retryAfterSec` is when to try again. */
export class LoginRateLimitedError extends ServiceError {
  readonly retryAfterSec: number;

  constructor(retryAfterMs: number) {
    const retryAfterSec = Math.max(1, Math.ceil(retryAfterMs / 1000));
    super("RATE_LIMITED", `too many sign-in attempts; retry in ${retryAfterSec} s`, { details: { retryAfterSec } });
    this.retryAfterSec = retryAfterSec;
  }
}

/** The one answer to a wrong password and an unknown email alike. */
export function badCredentials(): ServiceError {
  return new ServiceError("UNAUTHORIZED", "the email or the password is wrong");
}
