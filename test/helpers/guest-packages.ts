/**
 * The Debian packages the minimal guest image must have (what the sandbox promises its users), checked
 * in the template by rootfs/builder.test.ts and in a built image by test/e2e/image-build.test.ts.
 */
export const REQUIRED_GUEST_PACKAGES: readonly string[] = [
  "bash",
  "coreutils",
  "procps",
  "iproute2",
  "python3",
  "git",
  "curl",
  "sudo",
  "ca-certificates",
  "socat",
  "chrony",
];
