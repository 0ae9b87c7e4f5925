import { z } from "@hono/zod-openapi";

const path = z
  .string()
  .min(1)
  .max(4096)
  .openapi({ description: "Path in the sandbox; relative paths resolve against the user's home" });
const user = z
  .string()
  .max(64)
  .optional()
  .openapi({ description: "Linux user to act as; default: the sandbox's default user" });

/** Body of files/read, files/mkdir and files/remove. */
export const PathBody = z.object({ path, user }).openapi("PathRequest");

/** Body of files/list. */
export const ListBody = z
  .object({ path, user, depth: z.number().int().min(1).max(16).default(1) })
  .openapi("ListFilesRequest");

/** A filesystem entry. */
export const Entry = z
  .object({
    name: z.string(),
    path: z.string(),
    type: z.enum(["file", "directory", "symlink", "unknown"]),
    size: z.number().int(),
    mode: z.number().int(),
    owner: z.string(),
    modifiedAt: z.string().nullable(),
    symlinkTarget: z.string().optional(),
  })
  .openapi("Entry");

/** Answer of files/list. */
export const EntryList = z.object({ entries: z.array(Entry) }).openapi("EntryList");

/** Answer of files/mkdir. */
export const EntryResult = z.object({ entry: Entry }).openapi("EntryResult");

/** Answer of files/write. */
export const WrittenFile = z.object({ path: z.string(), size: z.number().int() }).openapi("WrittenFile");

/** Query of files/write: the path may come here instead of a form field. */
export const WriteQuery = z.object({ path: path.optional(), user });
