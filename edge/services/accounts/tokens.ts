import { randomString } from "../ids.js";

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const lowerAlnum = "abcdefghijklmnopqrstuvwxyz0123456789";

/** A bearer token of 256 bits (43 characters of [A-Za-z0-9]), for session cookies and invitation links. */
export function newSecretToken(): string {
  return randomString(43, alphabet);
}

/** Prefixed ids of the accounts tables: `usr_…`, `ses_…`, `inv_…`. */
export function newAccountId(prefix: "usr" | "ses" | "inv"): string {
  return `${prefix}_${randomString(16, lowerAlnum)}`;
}

/** The form emails are compared in (the stored form keeps the user's case). */
export function emailKey(email: string): string {
  return email.trim().toLowerCase();
}
