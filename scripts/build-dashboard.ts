/**
 * `npm run build:dashboard`: bundles the dashboard's client (edge/dashboard/client/main.tsx, Hono's
 * DOM JSX, uPlot; terminal.ts, xterm.js, loaded on demand) and its styles (ours, uPlot's, xterm.js's) with esbuild, minified, into
 * edge/dashboard/public/dashboard/assets/. The output is committed, so `npm ci` and `npm start`
 * need no build step and Workers deploy it through the assets binding (wrangler.toml `[assets]`);
 * `npm run check:generated` rebuilds it and fails when it differs from what is committed.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build, transform } from "esbuild";

const here = fileURLToPath(new URL("../edge/dashboard/", import.meta.url));
const out = join(here, "public/dashboard/assets");
const require = createRequire(import.meta.url);

/** Builds app.js and app.css; answers their sizes in bytes. */
export async function buildDashboard(): Promise<{ js: number; terminal: number; css: number }> {
  await build({
    entryPoints: { app: join(here, "client/main.tsx"), terminal: join(here, "client/terminal.ts") },
    outdir: out,
    bundle: true,
    minify: true,
    format: "esm",
    target: "es2022",
    platform: "browser",
    jsx: "automatic",
    jsxImportSource: "hono/jsx/dom",
    legalComments: "none",
    logLevel: "warning",
  });
  const uplotCss = readFileSync(require.resolve("uplot/dist/uPlot.min.css"), "utf8");
  const xtermCss = readFileSync(require.resolve("@xterm/xterm/css/xterm.css"), "utf8");
  const ours = readFileSync(join(here, "client/style.css"), "utf8");
  const css = await transform(`${uplotCss}\n${xtermCss}\n${ours}`, {
    loader: "css",
    minify: true,
    target: "chrome110",
  });
  writeFileSync(join(out, "app.css"), css.code);
  return {
    js: readFileSync(join(out, "app.js")).length,
    terminal: readFileSync(join(out, "terminal.js")).length,
    css: css.code.length,
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const sizes = await buildDashboard();
  console.log(`dashboard: app.js ${sizes.js} B, terminal.js ${sizes.terminal} B, app.css ${sizes.css} B`);
}
