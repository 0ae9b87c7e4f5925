import { resolve } from "node:path";
import { z } from "zod";

/**
 * The image builder's configuration: the only module of the `image` program that reads process.env.
 * Parsed once at start-up and passed down as a value.
 */
export interface ImageBuilderConfig {
  /** AGENT_FILES_ROOTDIR: the shared root holding kernels/ and images/ (default /var/lib/wrenn). */
  rootDir: string;
  /** WRENN_DEBIAN_MIRROR: the Debian mirror for debootstrap and the image's apt (default: the host's apt mirror). */
  mirror: string | undefined;
  /** WRENN_ENVD_DIST: the packaged envd directory to inject (default <repo>/dist/envd). */
  envdDist: string;
  /** Repository root, for `npm run build:envd`. */
  repoDir: string;
  /** WRENN_IMAGE_MAX_BYTES: bound on a pulled container image and on its unpacked tree (`image import`). */
  maxImageBytes: number | undefined;
  /** WRENN_REGISTRY_CREDS: user:password for `image import` (kept off the command line, where ps shows it). */
  registryCreds: string | undefined;
  /**
   * WRENN_MICROVM_KERNEL: `build` (default) builds the microvm guest kernel with the image, `skip` leaves
   * it out (guests boot Debian's cloud kernel). `wrenn up` skips it unless its runtime is qemu: the build
   * takes ~11 min on 2 idle cores, and gVisor, namespace and Firecracker (for now) do not boot it.
   */
  microvmKernel: "build" | "skip";
}

const envSchema = z.object({
  AGENT_FILES_ROOTDIR: z.string().min(1).default("/var/lib/wrenn"),
  WRENN_DEBIAN_MIRROR: z.url({ protocol: /^https?$/ }).optional(),
  WRENN_ENVD_DIST: z.string().min(1).optional(),
  WRENN_IMAGE_MAX_BYTES: z.coerce.number().int().positive().optional(),
  WRENN_REGISTRY_CREDS: z.string().min(3).optional(),
  WRENN_MICROVM_KERNEL: z.enum(["build", "skip"]).default("build"),
});

/** Parses the builder's environment; throws a readable error naming the bad variable. */
export function loadImageBuilderConfig(env: NodeJS.ProcessEnv = process.env): ImageBuilderConfig {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
    throw new Error(`invalid environment for the image builder: ${issues}`);
  }
  const repoDir = resolve(import.meta.dirname, "..");
  return {
    rootDir: resolve(parsed.data.AGENT_FILES_ROOTDIR),
    mirror: parsed.data.WRENN_DEBIAN_MIRROR?.replace(/\/+$/, ""),
    envdDist: resolve(parsed.data.WRENN_ENVD_DIST ?? resolve(repoDir, "dist", "envd")),
    repoDir,
    maxImageBytes: parsed.data.WRENN_IMAGE_MAX_BYTES,
    registryCreds: parsed.data.WRENN_REGISTRY_CREDS,
    microvmKernel: parsed.data.WRENN_MICROVM_KERNEL,
  };
}
