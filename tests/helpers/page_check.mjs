// page_check.mjs UI_JSON OUT_PNG [--load-only] : the real ComfyUI page (at $COMFYUI_URL) loads a UI-format
// workflow as an artist would, runs it with the Run button's code path, waits for the queue to
// empty, then prints one JSON line: every node's box and whether it shows an image, the groups,
// and the missing-models dialog's entries; and writes a screenshot of the whole graph.
// Needs playwright-core (PLAYWRIGHT_CORE_DIR) and chromium (CHROMIUM), as ../shared/comfyhost sets up.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
const require = createRequire(process.env.PLAYWRIGHT_CORE_DIR ? process.env.PLAYWRIGHT_CORE_DIR + "/" : import.meta.url);
const { chromium } = require("playwright-core");

const [inFile, outPng, mode] = process.argv.slice(2);
const url = process.env.COMFYUI_URL;
const ui = JSON.parse(readFileSync(inFile, "utf8"));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1800, height: 1100 } });
  await page.goto(url);
  await page.waitForFunction(() => window.comfyAPI?.app?.app?.canvas && window.comfyAPI.app.app.vueAppReady, null, { timeout: 120000 });
  // the node definitions can arrive after the app reports ready: load again until none is missing
  let dialog = "";
  for (let attempt = 0; attempt < 30; attempt++) {
    await page.evaluate(async (ui) => {
      await window.comfyAPI.app.app.loadGraphData(structuredClone(ui), true, true, "page_check");
    }, ui);
    await page.waitForTimeout(1500);
    // the dialogs the frontend opened on load (missing models, missing nodes), as the artist reads them
    dialog = await page.evaluate(() => [...document.querySelectorAll(".p-dialog")].map((d) => d.innerText).join("\n"));
    if (!dialog.includes("Nodes Are Missing")) break;
    await page.keyboard.press("Escape");
    await page.waitForTimeout(1000);
  }
  if (mode === "--load-only") {
    await page.screenshot({ path: outPng });
    console.log(JSON.stringify({ dialog }));
    process.exit(0);
  }
  await page.keyboard.press("Escape");
  await page.evaluate(async () => { await window.comfyAPI.app.app.queuePrompt(0, 1); });
  const deadline = Date.now() + Number(process.env.PAGE_CHECK_TIMEOUT || 600) * 1000;
  await page.waitForTimeout(1000);
  for (;;) {
    const q = await (await fetch(url + "/queue")).json();
    if (!q.queue_running.length && !q.queue_pending.length) break;
    if (Date.now() > deadline) throw new Error("the workflow did not finish in time");
    await page.waitForTimeout(500);
  }
  await page.waitForTimeout(1500);  // the last preview frame and the outputs reach the page
  const graph = await page.evaluate(() => {
    const app = window.comfyAPI.app.app;
    const nodes = app.graph._nodes.map((n) => ({
      id: n.id, type: n.type, title: n.title, pos: [...n.pos], size: [...n.size],
      images: (n.imgs?.length || 0) + (app.nodePreviewImages?.[String(n.id)]?.length || 0),
    }));
    const groups = (app.graph._groups || app.graph.groups || []).map((g) => ({ title: g.title, bounding: [...g._bounding] }));
    // fit the whole graph in the view for the screenshot
    const xs = nodes.flatMap((n) => [n.pos[0], n.pos[0] + n.size[0]]).concat(groups.flatMap((g) => [g.bounding[0], g.bounding[0] + g.bounding[2]]));
    const ys = nodes.flatMap((n) => [n.pos[1] - 30, n.pos[1] + n.size[1]]).concat(groups.flatMap((g) => [g.bounding[1], g.bounding[1] + g.bounding[3]]));
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const canvas = app.canvas.canvas;
    const scale = Math.min(canvas.width / (x1 - x0 + 80), canvas.height / (y1 - y0 + 80));
    app.canvas.ds.scale = scale;
    app.canvas.ds.offset = [-x0 + 40, -y0 + 40];
    app.canvas.setDirty(true, true);
    return { nodes, groups };
  });
  await page.waitForTimeout(500);
  await page.screenshot({ path: outPng });
  console.log(JSON.stringify({ ...graph, dialog }));
} finally {
  await browser.close();
}
