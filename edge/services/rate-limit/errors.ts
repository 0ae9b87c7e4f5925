import { ServiceError } from "../errors.js";
import type { RateLimit } from "./take-token.js";

/** The key's bucket is empty; `retryAfterSec` is when the next token arrives (whole seconds, at least 1). */
export class RateLimitedError extends ServiceError {
  readonly retryAfterSec: number;

  constructor(retryAfterMs: number, limit: RateLimit) {
    const retryAfterSec = Math.max(1, Math.ceil(retryAfterMs / 1000));
    super(
      "RATE_LIMITED",
      `this API key may send ${limit.perSec} requests per second (bursts of ${limit.burst}); retry in ${retryAfterSec} s`,
      { details: { retryAfterSec, perSec: limit.perSec, burst: limit.burst } },
    );
    this.retryAfterSec = retryAfterSec;
  }
}
